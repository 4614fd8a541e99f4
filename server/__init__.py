"""The aiohttp server that makes the engine a service (see docs/architecture.md)."""
