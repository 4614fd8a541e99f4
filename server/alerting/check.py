"""``tsengine rules check FILE...``: validate alert rule files without a server.

Who calls it: :mod:`tsengine.cli` (``add_parsers`` adds the subcommand, ``run`` executes it).
In: YAML or JSON rule files. Out: one line per file (``ok: N rules`` or the first error, which
names the rule and the field); exit status 0 when every file is valid, 1 otherwise.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from server.alerting.rules import load_rules_file
from tsengine.errors import InvalidInput

__all__ = ["add_parsers", "run"]


def add_parsers(sub: Any) -> None:
    commands = sub.add_parser("rules", help="work with alert rule files").add_subparsers(
        dest="rules_command", required=True
    )
    p = commands.add_parser("check", help="validate alert rule files (YAML or JSON)")
    p.add_argument("files", nargs="+", help="rule files")


def run(args: argparse.Namespace, out: TextIO) -> int:
    status = 0
    for path in args.files:
        try:
            rules = load_rules_file(path)
        except InvalidInput as exc:
            out.write(f"{path}: {exc.reason}\n")
            status = 1
            continue
        kinds = ", ".join(sorted({r.kind for r in rules}))
        out.write(f"{path}: ok, {len(rules)} rules" + (f" ({kinds})" if kinds else "") + "\n")
    return status
