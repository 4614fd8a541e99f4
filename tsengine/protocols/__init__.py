"""Pure wire-format parsers: ``parse(body, ...) -> list[TableBatch]``.

No aiohttp, no engine: each parser turns bytes into validated batches or raises
:class:`tsengine.errors.ParseError` naming the line or item and the reason.
"""
