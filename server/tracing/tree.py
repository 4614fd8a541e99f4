"""A trace's span rows → the span tree, with timings and where its errors originated.

In: the rows of :func:`server.tracing.queries.trace_spans` (dicts with hex ids, ``start_ns``,
``end_ns``, ``duration_ns``, ``status``, JSON-string ``attributes``/``events``/``links``/
``resource``). Out: a JSON-able dict — the trace's start, end, duration, span and error counts,
services, the ids of the error-origin spans and the spans in depth-first order (children by
start time), each with ``depth``, ``offset_ns`` (from the trace's start), ``children`` (ids) and
``error_origin``. A flat list rather than nested objects: a trace may be hundreds of levels deep.

**Error origin.** An error span is where an error originated when its error is not explained
by a child's: none of its children has status error, or it recorded an ``exception`` event
whose exception (type and message) none of its erroring children recorded — it failed on its
own, not (only) because a call it made failed. Spans whose parent is not in the trace (lost or
not yet exported) are roots too, flagged ``parent_missing``.

**A span id counts once**: rows repeating an earlier row's ``span_id`` (an export stored twice)
are dropped before anything is counted or linked.

Pure, CPU-bound, linear in the number of spans; no recursion.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["build_tree"]

_JSON_COLUMNS = ("attributes", "events", "links", "resource")


def _exceptions(events_json: str | None) -> set[tuple[Any, Any]]:
    if not events_json:
        return set()
    out = set()
    for event in orjson.loads(events_json):
        if event.get("name") == "exception":
            attrs = event.get("attributes") or {}
            out.add((attrs.get("exception.type"), attrs.get("exception.message")))
    return out


def _is_origin(span: dict[str, Any], children: list[dict[str, Any]]) -> bool:
    if span["status"] != "error":
        return False
    failed = [c for c in children if c["status"] == "error"]
    if not failed:
        return True
    own = _exceptions(span["events"])
    if not own:
        return False
    explained: set[tuple[Any, Any]] = set()
    for child in failed:
        explained |= _exceptions(child["events"])
    return not own <= explained


def build_tree(trace_id: str, rows: list[dict[str, Any]], *, truncated: bool = False) -> dict[str, Any]:
    """The tree of one trace's spans (``rows`` in start order); see the module docstring."""
    by_id: dict[str, dict[str, Any]] = {}
    for r in rows:
        by_id.setdefault(r["span_id"], r)
    if len(by_id) < len(rows):  # copies of a span: keep the first
        rows = list(by_id.values())
    children: dict[str, list[dict[str, Any]]] = {}
    roots: list[dict[str, Any]] = []
    for r in rows:
        parent = r["parent_span_id"]
        if parent is not None and parent in by_id and parent != r["span_id"]:
            children.setdefault(parent, []).append(r)
        else:
            roots.append(r)
    start = min((r["start_ns"] for r in rows), default=0)
    end = max((r["end_ns"] for r in rows), default=0)
    ordered: list[dict[str, Any]] = []
    origins: list[str] = []
    seen: set[str] = set()
    stack = [(r, 0) for r in reversed(roots)]
    while True:
        if not stack:
            # Spans whose parent links form a cycle were reached from no root: start from them.
            rest = [r for r in rows if r["span_id"] not in seen]
            if not rest:
                break
            stack.append((rest[0], 0))
        span, depth = stack.pop()
        sid = span["span_id"]
        if sid in seen:  # reached twice through a parent cycle
            continue
        seen.add(sid)
        kids = children.get(sid, [])
        origin = _is_origin(span, kids)
        if origin:
            origins.append(sid)
        node = {
            k: (orjson.Fragment(v) if k in _JSON_COLUMNS and v is not None else v) for k, v in span.items()
        }
        node.update(
            depth=depth,
            offset_ns=span["start_ns"] - start,
            children=[c["span_id"] for c in kids],
            error_origin=origin,
            parent_missing=span["parent_span_id"] is not None and depth == 0,
        )
        ordered.append(node)
        stack.extend((c, depth + 1) for c in reversed(kids))
    return {
        "trace_id": trace_id,
        "start_ns": start,
        "end_ns": end,
        "duration_ns": end - start,
        "span_count": len(rows),
        "error_count": sum(r["status"] == "error" for r in rows),
        "services": sorted({r["service"] for r in rows}),
        "error_origins": origins,
        "truncated": truncated,
        "spans": ordered,
    }
