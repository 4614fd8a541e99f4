"""Request bodies are decoded the same way on every route that reads one: gzip is undone."""

from __future__ import annotations

import gzip
from typing import Any

import orjson

from server import ServerConfig

GZIP_JSON = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


async def test_json_bodies_may_be_gzipped_on_every_route(make_client: Any) -> None:
    client = await make_client(
        ServerConfig(port=0, alerting={"default_rules": False}, tasks={"intervals": {"alert_evaluation": 0}})
    )

    def body(doc: dict[str, Any]) -> bytes:
        return gzip.compress(orjson.dumps(doc))

    rule = {"name": "hot", "kind": "threshold", "table": "temp", "agg": "last", "window": "10m",
            "threshold": 30}  # fmt: skip
    resp = await client.post("/api/v1/rules", data=body(rule), headers=GZIP_JSON)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["name"] == "hot"

    resp = await client.put("/api/v1/retention/default", data=body({"hours": 48}), headers=GZIP_JSON)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["hours"] == 48

    resp = await client.post("/api/v1/sql", data=body({"sql": "SELECT 41 + 1 AS x"}), headers=GZIP_JSON)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["rows"] == [[42]]
