"""Authentication and scopes.

Each route handler declares the scope it needs with :func:`requires` (``write``, ``read`` or
``admin``; ``admin`` tokens may do everything); handlers without a declaration (``/health``,
``/metrics``) are public. :func:`auth_middleware` finds the caller's token in, in order:

* ``Authorization: Bearer <token>`` (the usual API clients, Prometheus ``authorization``),
* ``Authorization: Token <token>`` (InfluxDB 2.x clients),
* ``Authorization: Basic base64(user:token)`` — the user is ignored (Prometheus
  ``remote_write.basic_auth``, Telegraf, InfluxDB 1.x clients),
* ``?p=<token>`` on routes that declare ``query_credentials`` (InfluxDB 1.x ``/write?u=&p=``).

No token → 401 ``Unauthorized``; a token without the scope → 403 ``Forbidden``. With no token
configured authentication is off, which :func:`check_bind` allows only on a loopback address.
Tokens are compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from server.config import SCOPES, ServerConfig, Token
from server.keys import CONFIG_KEY
from tsengine.errors import Forbidden, InvalidInput, Unauthorized

__all__ = ["auth_middleware", "check_bind", "is_loopback", "requires"]

F = TypeVar("F", bound=Callable[..., Any])
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_SCOPE_ATTR = "__tsengine_scope__"
_QUERY_CREDENTIALS_ATTR = "__tsengine_query_credentials__"


def requires(scope: str, *, query_credentials: bool = False) -> Callable[[F], F]:
    """Mark a handler as needing ``scope``; ``query_credentials`` also accepts ``?p=<token>``."""
    if scope not in SCOPES:
        raise ValueError(f"BUG: unknown scope {scope!r}")

    def mark(handler: F) -> F:
        setattr(handler, _SCOPE_ATTR, scope)
        setattr(handler, _QUERY_CREDENTIALS_ATTR, query_credentials)
        return handler

    return mark


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(config: ServerConfig) -> None:
    """Refuse to serve without authentication on anything but a loopback address."""
    if not config.auth_enabled and not is_loopback(config.host):
        raise InvalidInput(
            f"cannot listen on {config.host}: no tokens are configured, so only a loopback address "
            "(127.0.0.1, ::1, localhost) is allowed; set TSENGINE_TOKENS or 'tokens' in the config file"
        )


def _presented_token(request: web.Request, query_credentials: bool) -> str | None:
    header = request.headers.get("Authorization")
    if header:
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme in ("bearer", "token"):
            return value or None
        if scheme == "basic":
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise Unauthorized("cannot authenticate: malformed basic credentials") from None
            return decoded.partition(":")[2] or None
        raise Unauthorized(f"cannot authenticate: unsupported scheme {scheme!r} (use Bearer, Token or Basic)")
    if query_credentials:
        return request.query.get("p") or None
    return None


def _find(tokens: tuple[Token, ...], presented: str) -> Token | None:
    found = None
    given = presented.encode()
    for t in tokens:  # no early exit: the time taken does not depend on which token matched
        if hmac.compare_digest(t.token.encode(), given):
            found = t
    return found


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    config = request.app[CONFIG_KEY]
    route_handler = request.match_info.handler
    scope = getattr(route_handler, _SCOPE_ATTR, None)
    if scope is None or not config.auth_enabled:
        return await handler(request)
    presented = _presented_token(request, getattr(route_handler, _QUERY_CREDENTIALS_ATTR, False))
    if presented is None:
        raise Unauthorized(
            f"cannot {request.method} {request.path}: no token given (this needs scope {scope!r})"
        )
    token = _find(config.tokens, presented)
    if token is None:
        raise Unauthorized(f"cannot {request.method} {request.path}: unknown token")
    if not token.allows(scope):
        raise Forbidden(
            f"cannot {request.method} {request.path}: token {token.name or '(unnamed)'} "
            f"lacks scope {scope!r} "
            f"(it has {sorted(token.scopes)})"
        )
    return await handler(request)
