"""The one exception tree of tsengine.

Every error the engine, the protocols, the query layer and the server raise on purpose is a
subclass of :class:`TsengineError`. The HTTP layer maps each branch to one status code::

    TsengineError                      base; ``reason`` and optional fields
    ├── InvalidInput                   400 — the caller sent something wrong
    │   ├── ParseError                 400 — a body that does not parse (``line``/``item``)
    │   ├── InvalidName                400 — a database, table or column name is not allowed
    │   ├── SchemaConflict             400 — a field's type differs from the stored one
    │   └── LimitExceeded              400 — too many columns, series, bytes, ...
    ├── Unauthorized                   401 — no or unknown credentials
    ├── Forbidden                      403 — credentials lack the scope
    │   └── SandboxViolation           403 — user SQL tried something it may not do
    ├── NotFound                       404
    ├── Overloaded                     429/503 — retry later (``retry_after_s``)
    ├── QueryError                     400 — SQL that DuckDB rejects (syntax, binding, types)
    └── StorageError                   500 — the disk or a file on it failed us

Messages read ``cannot <verb> <object>: <reason>``. A broken invariant is not an error of this
tree: it raises ``AssertionError`` / ``RuntimeError`` starting with ``BUG:``.
"""

from __future__ import annotations

__all__ = [
    "Forbidden",
    "InvalidInput",
    "InvalidName",
    "LimitExceeded",
    "NotFound",
    "Overloaded",
    "ParseError",
    "QueryError",
    "SandboxViolation",
    "SchemaConflict",
    "StorageError",
    "TsengineError",
    "Unauthorized",
]


class TsengineError(Exception):
    """Base of every deliberate tsengine error.

    Attributes:
        reason: the human-readable message (also ``str(err)``).
        http_status: the status code the server answers with.
    """

    http_status = 500

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def to_dict(self) -> dict[str, object]:
        """JSON body for an HTTP error response."""
        out: dict[str, object] = {"error": type(self).__name__, "message": self.reason}
        for key in ("line", "item", "table", "field", "name", "path", "retry_after_s"):
            value = getattr(self, key, None)
            if value is not None:
                out[key] = value
        return out


class InvalidInput(TsengineError):
    """The caller sent something the engine will not take (HTTP 400)."""

    http_status = 400


class ParseError(InvalidInput):
    """A request body that does not parse.

    Attributes:
        line: 1-based line number for line-oriented formats, else None.
        item: index or path of the offending item for structured formats, else None.
    """

    def __init__(self, reason: str, *, line: int | None = None, item: str | int | None = None) -> None:
        if line is not None:
            message = f"cannot parse line {line}: {reason}"
        elif item is not None:
            message = f"cannot parse item {item}: {reason}"
        else:
            message = reason
        super().__init__(message)
        self.line = line
        self.item = item


class InvalidName(InvalidInput):
    """A database, table, tag or field name that is not allowed."""

    def __init__(self, reason: str, *, name: str) -> None:
        super().__init__(reason)
        self.name = name


class SchemaConflict(InvalidInput):
    """A column arrives with a type or kind other than the one already stored."""

    def __init__(self, reason: str, *, table: str, field: str) -> None:
        super().__init__(reason)
        self.table = table
        self.field = field


class LimitExceeded(InvalidInput):
    """A request exceeds a configured limit (columns, series, name length, body size)."""


class Unauthorized(TsengineError):
    """No credentials, or credentials the server does not know (HTTP 401)."""

    http_status = 401


class Forbidden(TsengineError):
    """Credentials without the scope the operation needs (HTTP 403)."""

    http_status = 403


class SandboxViolation(Forbidden):
    """User SQL tried to do something outside the read-only sandbox (HTTP 403)."""


class NotFound(TsengineError):
    """The named thing does not exist (HTTP 404)."""

    http_status = 404


class Overloaded(TsengineError):
    """The engine is at a memory or queue bound; the caller should retry (HTTP 429).

    Attributes:
        retry_after_s: seconds after which a retry is likely to succeed.
    """

    http_status = 429

    def __init__(self, reason: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class QueryError(TsengineError):
    """SQL that DuckDB rejected: syntax, unknown column, type mismatch (HTTP 400)."""

    http_status = 400


class StorageError(TsengineError):
    """An I/O failure of the data directory (HTTP 500)."""

    http_status = 500

    def __init__(self, reason: str, *, path: str | None = None) -> None:
        super().__init__(reason)
        self.path = path
