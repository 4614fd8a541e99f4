"""``GET /``: the dashboard page is served (public, self-contained), and every API call it makes answers.

:data:`PAGE_CALLS` lists the calls the page's script makes (with the query strings it builds);
the test checks the list against the page (each call's path is in the page, and every API path
in the page is in the list), then makes each call, as the page does, on a server with auth on
and SDK-shaped data: the SDK's HTTP metrics (``http_requests_total``,
``http_request_duration_seconds_bucket``) and events rows through ``/api/v1/import``, spans
through ``/v1/traces``.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from server import ServerConfig
from tests.integration.conftest import READ_TOKEN, TOKENS, WRITE_TOKEN
from tests.integration.test_server_traces import PROTOBUF, crafted_request
from tsengine.clock import ManualClock

T0 = 1_700_000_000_000_000_000
S = 10**9

#: (method, path and query) of every call of the page's script; "SQL_*" names a query of the page.
PAGE_CALLS = [
    ("GET", "/health/telemetry"),
    ("GET", "/api/v1/tables?db=default"),
    ("POST", "/api/v1/sql", "SQL_RATE"),
    ("POST", "/api/v1/sql", "SQL_LATENCY"),
    ("GET", "/api/v1/alerts?state=firing"),
    ("GET", "/api/v1/events?db=default&limit=50"),
    ("GET", "/api/v1/events?db=default&limit=50&severity=warning"),
    ("GET", f"/api/v1/events/stream?db=default&p={READ_TOKEN}"),
    ("GET", "/api/v1/traces?db=default&min_duration=500ms&limit=20"),
    ("GET", "/api/v1/services/dependencies?db=default"),
]


def sdk_rows() -> bytes:
    """What the SDK's HttpExporter sends: NDJSON rows of metric tables and of ``events``."""
    rows = []
    for step, t in enumerate((T0 - 120 * S, T0 - 60 * S)):
        for route, count in (("/orders", 10), ("/health", 4)):
            tags = {"service": "shop", "method": "GET", "route": route, "status": "200"}
            rows.append(
                {
                    "table": "http_requests_total",
                    "time": t,
                    "tags": tags,
                    "fields": {"value": float(count * (step + 1))},
                }
            )
            for le, share in (("0.05", 0.5), ("0.25", 0.9), ("1.0", 1.0), ("+Inf", 1.0)):
                btags = {"service": "shop", "method": "GET", "route": route, "le": le}
                value = count * (step + 1) * share
                rows.append(
                    {
                        "table": "http_request_duration_seconds_bucket",
                        "time": t,
                        "tags": btags,
                        "fields": {"value": value},
                    }
                )
    for i, severity in enumerate(("info", "warning", "error")):
        rows.append(
            {
                "table": "events",
                "time": T0 - (10 - i) * S,
                "tags": {"service": "shop", "category": "business", "severity": severity, "name": f"e{i}"},
                "fields": {"id": i + 1, "message": f"event {i}", "attributes": "{}"},
            }
        )
    return b"\n".join(orjson.dumps(r) for r in rows)


def page_sql(page: str) -> dict[str, str]:
    return dict(re.findall(r"const (SQL_\w+) = `([^`]*)`;", page))


async def test_get_root_serves_the_page_without_auth(make_client: Any) -> None:
    client = await make_client(ServerConfig(port=0, tokens=TOKENS))
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    page = await resp.text()
    assert "<title>tsengine</title>" in page and "</html>" in page
    # Self-contained: nothing loaded from elsewhere (no internet), no data in the HTML itself.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "http://" not in page and "https://" not in page
    assert "localStorage" in page and "EventSource" in page
    assert len(page.splitlines()) < 400


async def test_every_call_of_the_page_answers_200_with_data(make_client: Any) -> None:
    clock = ManualClock(T0)
    client = await make_client(ServerConfig(port=0, tokens=TOKENS), clock=clock)
    write = {"Authorization": f"Bearer {WRITE_TOKEN}"}
    resp = await client.post(
        "/api/v1/import", data=sdk_rows(), headers={**write, "Content-Type": "application/x-ndjson"}
    )
    assert resp.status == 204, await resp.text()
    resp = await client.post(
        "/v1/traces", data=crafted_request().SerializeToString(), headers={**write, **PROTOBUF}
    )
    assert resp.status == 200
    clock.advance(60)  # the spans start at T0..T0+1s: inside the last hour

    page = await (await client.get("/")).text()
    queries = page_sql(page)
    assert set(queries) == {"SQL_RATE", "SQL_LATENCY"}
    for call in PAGE_CALLS:
        assert call[1].split("?")[0] in page, call
    api_paths = set(re.findall(r'"(/(?:api/v1|health)[a-z/]*)', page))
    assert api_paths <= {call[1].split("?")[0] for call in PAGE_CALLS}, api_paths

    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    answers: dict[str, Any] = {}
    for method, path, *sql in PAGE_CALLS:
        if method == "POST":
            resp = await client.post(path, json={"sql": queries[sql[0]], "db": "default"}, headers=read)
            key = sql[0]
        elif "/stream" in path:  # EventSource: no headers, the token in the query
            resp = await client.get(path)
            assert resp.status == 200
            assert await resp.content.readline() == b": subscribed\n"
            resp.close()
            continue
        else:
            resp = await client.get(path, headers=read)
            key = path
        assert resp.status == 200, (path, await resp.text())
        answers[key] = await resp.json()

    tables = {t["table"]: t for t in answers["/api/v1/tables?db=default"]["tables"]}
    assert {"events", "spans", "http_requests_total", "http_request_duration_seconds_bucket"} <= set(tables)
    assert tables["events"]["append_only"] and tables["events"]["tags"][:2] == ["service", "category"]
    assert tables["http_requests_total"]["fields"] == {"value": "float"}
    rate = {r[1]: r for r in answers["SQL_RATE"]["rows"]}  # by route: service, route, requests, per_s
    assert rate["/orders"][2:] == [10.0, round(10 / 60, 3)]
    latency = {r[1]: r[2:] for r in answers["SQL_LATENCY"]["rows"]}  # requests, p50, p95, p99
    assert latency["/orders"] == [10.0, 0.05, 1.0, 1.0]
    assert [e["name"] for e in answers["/api/v1/events?db=default&limit=50"]["events"]] == ["e2", "e1", "e0"]
    assert len(answers["/api/v1/events?db=default&limit=50&severity=warning"]["events"]) == 2
    assert answers["/api/v1/services/dependencies?db=default"]["edges"]
    assert "tasks" in answers["/health/telemetry"]
    assert answers["/api/v1/alerts?state=firing"] == {"alerts": []}
