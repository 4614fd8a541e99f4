"""The span tree of one trace: order, depth, error origins, partial traces and broken parent links."""

from __future__ import annotations

from typing import Any

import orjson

from server.tracing.tree import build_tree


def span(
    sid: str, parent: str | None, start: int, *, status: str = "ok", exception: str | None = None
) -> dict[str, Any]:
    events = None
    if exception is not None:
        events = orjson.dumps(
            [{"name": "exception", "time_ns": start, "attributes": {"exception.type": exception}}]
        ).decode()
    return {
        "trace_id": "t",
        "span_id": sid,
        "parent_span_id": parent,
        "service": sid[0],
        "name": f"op {sid}",
        "kind": "internal",
        "status": status,
        "status_message": None,
        "start_ns": start,
        "end_ns": start + 10,
        "duration_ns": 10,
        "attributes": "{}",
        "events": events,
        "links": None,
        "resource": "{}",
        "scope_name": None,
    }


def tree(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(build_tree("t", rows)))


def test_depth_first_children_by_start() -> None:
    rows = [span("a", None, 0), span("c", "a", 5), span("b", "a", 2), span("d", "b", 3)]
    rows.sort(key=lambda r: r["start_ns"])
    t = tree(rows)
    assert [(s["span_id"], s["depth"], s["offset_ns"]) for s in t["spans"]] == [
        ("a", 0, 0), ("b", 1, 2), ("d", 2, 3), ("c", 1, 5),
    ]  # fmt: skip
    assert t["spans"][0]["children"] == ["b", "c"]
    assert (t["start_ns"], t["end_ns"], t["duration_ns"]) == (0, 15, 15)


def test_error_explained_by_a_child_is_not_an_origin() -> None:
    rows = [
        span("a", None, 0, status="error"),
        span("b", "a", 1, status="error"),
        span("c", "b", 2, status="error"),
    ]
    assert tree(rows)["error_origins"] == ["c"]


def test_own_exception_is_an_origin_even_with_a_failed_child() -> None:
    rows = [
        span("a", None, 0, status="error", exception="KeyError"),
        span("b", "a", 1, status="error", exception="Timeout"),
    ]
    assert tree(rows)["error_origins"] == ["a", "b"]
    same = [
        span("a", None, 0, status="error", exception="Timeout"),
        span("b", "a", 1, status="error", exception="Timeout"),
    ]
    assert tree(same)["error_origins"] == ["b"]  # the same exception, propagated


def test_parallel_failures_are_each_an_origin() -> None:
    rows = [
        span("a", None, 0, status="error"),
        span("b", "a", 1, status="error"),
        span("c", "a", 2, status="error"),
    ]
    assert tree(rows)["error_origins"] == ["b", "c"]


def test_missing_parent_cycles_and_duplicates() -> None:
    rows = [
        span("a", "zz", 0),  # its parent was never stored
        span("x", "y", 1),  # x and y point at each other: no root reaches them
        span("y", "x", 2),
        span("s", "s", 3),  # its own parent
        span("a", "zz", 4),  # the same span id twice (a retried export)
    ]
    t = tree(rows)
    ids = [s["span_id"] for s in t["spans"]]
    assert sorted(ids) == ["a", "s", "x", "y"]
    assert t["spans"][0]["parent_missing"] is True
    assert t["span_count"] == 4  # a span id counts once


def test_copies_of_spans_count_once() -> None:
    """A retried export stores every span twice: the tree is the one of a single copy."""
    once = [
        span("a", None, 0, status="error"),
        span("b", "a", 1, status="error"),
        span("c", "a", 2),
    ]
    twice = sorted(once + [dict(r) for r in once], key=lambda r: r["start_ns"])
    t = tree(twice)
    assert t == tree(once)
    assert (t["span_count"], t["error_count"], t["error_origins"]) == (3, 2, ["b"])
    assert t["spans"][0]["children"] == ["b", "c"]


def test_json_columns_are_embedded_as_json() -> None:
    row = span("a", None, 0, status="error", exception="E")
    row["attributes"] = '{"k":[1,2]}'
    (s,) = tree([row])["spans"]
    assert s["attributes"] == {"k": [1, 2]}
    assert s["events"][0]["attributes"] == {"exception.type": "E"}
    assert s["links"] is None
