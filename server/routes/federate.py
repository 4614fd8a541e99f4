"""Prometheus federation: ``GET /federate?match[]=<selector>...``.

Answers the latest stored sample of every series matching any of the selectors, in Prometheus
text format 0.0.4, so a Prometheus can scrape tsengine (with ``honor_labels: true``). ``db``
selects the database (default ``default``); scope ``read``.

Tables map to series as :mod:`server.promseries` says; a series whose latest sample is a
staleness marker is left out (it is gone, as in Prometheus' own federation). The timestamp is
that of the series' latest sample.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from aiohttp import web

from server.auth import requires
from server.keys import ENGINE_KEY, run_blocking
from server.promseries import SeriesSource, metrics_matching, rows_matching
from server.selectors import Selector, parse_selector
from tsengine.errors import InvalidInput, NotFound
from tsengine.model.names import validate_db

__all__ = ["ROUTES", "federate_text"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_STALE_BITS = 0x7FF0000000000002


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _values(column: pa.ChunkedArray) -> tuple[list[float], np.ndarray]:
    """Float values and a validity mask (False: no value, or a staleness marker)."""
    arr = column.combine_chunks()
    valid = np.asarray(arr.is_valid(), dtype=bool)
    floats = np.asarray(pc.cast(arr, pa.float64()).fill_null(0.0), dtype=np.float64)
    if pa.types.is_floating(arr.type):
        valid &= floats.view(np.uint64) != np.uint64(_STALE_BITS)
    return floats.tolist(), valid


def federate_text(engine: Any, db: str, selectors: list[Selector]) -> bytes:
    """The federation answer (blocking: reads the engine; may scan Parquet once per table)."""
    wanted: dict[tuple[str, str], dict[str, list[Selector]]] = {}
    sources: dict[tuple[str, str, str], SeriesSource] = {}
    for sel in selectors:
        for src in metrics_matching(engine, db, sel.matchers):
            wanted.setdefault((src.db, src.table), {}).setdefault(src.field, []).append(sel)
            sources[(src.db, src.table, src.field)] = src
    out: dict[str, list[str]] = {}
    helps: dict[str, str] = {}
    for (table_db, table), fields in wanted.items():
        try:
            latest = engine.latest(table, db=table_db)
        except NotFound:  # dropped since the schema was read
            continue
        if latest.num_rows == 0:
            continue
        times_ms = (latest.column("time").combine_chunks().cast(pa.int64()).to_numpy() // 1_000_000).tolist()
        for field, sels in fields.items():
            src = sources[(table_db, table, field)]
            if field not in latest.column_names:
                continue
            mask = np.zeros(latest.num_rows, dtype=bool)
            for sel in sels:
                mask |= rows_matching(latest, src.labels, sel.matchers)
            values, valid = _values(latest.column(field))
            tag_values = {label: latest.column(tag).to_pylist() for label, tag in src.labels.items()}
            helps.setdefault(src.name, f"{table_db}.{table}.{field}")
            lines = out.setdefault(src.name, [])
            for i in np.flatnonzero(mask & valid).tolist():
                pairs = ",".join(
                    f'{label}="{_escape(v[i])}"' for label, v in tag_values.items() if v[i] not in (None, "")
                )
                series = f"{src.name}{{{pairs}}}" if pairs else src.name
                lines.append(f"{series} {_number(values[i])} {times_ms[i]}\n")
    text = []
    for name in sorted(out):
        if out[name]:
            # promtool wants a HELP line; the source column is the most useful thing to say.
            text.append(f"# HELP {name} Latest samples of {_escape(helps[name])} stored in tsengine.\n")
            text.append(f"# TYPE {name} untyped\n")
            text.extend(out[name])
    return "".join(text).encode()


@requires("read")
async def federate(request: web.Request) -> web.StreamResponse:
    raw = request.query.getall("match[]", [])
    if not raw:
        raise InvalidInput('cannot federate: give at least one match[] selector, e.g. match[]={job="api"}')
    selectors = [parse_selector(text) for text in raw]
    db = validate_db(request.query.get("db") or "default")
    body = await run_blocking(request, "query", federate_text, request.app[ENGINE_KEY], db, selectors)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


ROUTES = [web.get("/federate", federate)]
