"""Request bodies, read within two bounds: as sent, and once decompressed.

:func:`read_body` (event loop) reads the body as sent, refusing it at ``max_bytes`` — by
``Content-Length`` before any byte is read, or as it arrives. :func:`decode_body` (worker
thread, CPU-bound) undoes ``gzip``/``deflate`` in steps, never producing more than
``max_decompressed_bytes + 1`` bytes, so a decompression bomb costs its bound in memory and no
more, and it refuses a stream that is corrupt or cut short (a truncated body must not become a
shorter, valid-looking one). Both raise :class:`~server.errors.BodyTooLarge` (413).

The server runs aiohttp with ``auto_decompress=False`` (:mod:`tsengine.cli`, the tests) so that
the body arrives as sent. If an embedding application serves the app with aiohttp's default
``auto_decompress=True``, aiohttp has already inflated the stream (leniently: it does not check
the gzip trailer); :func:`read_body` notices, bounds the inflated size while reading, and
:func:`decode_body` then has nothing left to do.

Encodings the server does not decode (``snappy`` for remote write) are left to the route, which
names them in ``passthrough``; any other one is a 415. :func:`otlp_content_type` is the
``Content-Type`` check the three OTLP/HTTP routes share (415 for anything but protobuf or JSON).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from server.errors import BodyTooLarge
from tsengine.errors import InvalidInput, ParseError

__all__ = ["BrokenBody", "RawBody", "UnsupportedMediaType", "decode_body", "otlp_content_type", "read_body"]

#: What an OTLP/HTTP route accepts: binary protobuf (under either name) or JSON.
_OTLP_PROTOBUF = "application/x-protobuf"
_OTLP_JSON = "application/json"
_OTLP_TYPES = (_OTLP_PROTOBUF, "application/protobuf", _OTLP_JSON)

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class UnsupportedMediaType(InvalidInput):
    """A ``Content-Type`` or ``Content-Encoding`` the endpoint does not take (HTTP 415)."""

    http_status = 415


class BrokenBody(ParseError):
    """The body stream failed (corrupt compressed data); the connection is closed after the 400."""

    close_connection = True


def otlp_content_type(request: web.Request, signal: str) -> str:
    """The request's OTLP ``Content-Type``, or UnsupportedMediaType naming ``signal`` ("traces")."""
    content_type = request.content_type
    if content_type not in _OTLP_TYPES:
        raise UnsupportedMediaType(
            f"cannot decode OTLP {signal}: Content-Type {content_type!r} is not {_OTLP_PROTOBUF} or "
            f"{_OTLP_JSON}"
        )
    return content_type


@dataclass(frozen=True)
class RawBody:
    """A body as read: ``data`` still carries ``encoding`` ("" when there is nothing to undo)."""

    data: bytes
    encoding: str


def _encoding(request: web.Request, passthrough: frozenset[str]) -> str:
    enc = request.headers.get("Content-Encoding", "").strip().lower()
    if enc == "identity":
        return ""
    if enc and enc not in _WBITS and enc not in passthrough:
        known = sorted({"gzip", "deflate", *passthrough})
        raise UnsupportedMediaType(
            f"cannot decode request body: Content-Encoding {enc!r} is not supported here "
            f"(use {', '.join(known)} or none)"
        )
    return enc


async def read_body(
    request: web.Request,
    max_bytes: int,
    *,
    max_decompressed_bytes: int | None = None,
    passthrough: frozenset[str] = frozenset(),
) -> RawBody:
    """The body as sent (see the module docstring), or BodyTooLarge past a bound."""
    encoding = _encoding(request, passthrough)
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise BodyTooLarge(
            f"cannot read request body: Content-Length {declared} is larger than the limit of "
            f"{max_bytes} bytes"
        )
    stream = request.content
    # Set only when aiohttp inflates the stream itself (auto_decompress=True; aiohttp >= 3.12
    # says so, older versions have no such attribute and must run with auto_decompress=False).
    inflated_by_aiohttp = encoding in _WBITS and getattr(stream, "total_compressed_bytes", None) is not None
    limit = (max_decompressed_bytes or max_bytes) if inflated_by_aiohttp else max_bytes
    buf = bytearray()
    try:
        async for chunk in stream.iter_any():
            buf += chunk
            if len(buf) > limit:
                what = (
                    f"its {encoding} content inflates to more than"
                    if inflated_by_aiohttp
                    else "it is larger than"
                )
                raise BodyTooLarge(f"cannot read request body: {what} the limit of {limit} bytes")
            if inflated_by_aiohttp and stream.total_raw_bytes > max_bytes:
                raise BodyTooLarge(
                    f"cannot read request body: it is larger than the limit of {max_bytes} bytes"
                )
    except (HttpProcessingError, RequestPayloadError) as exc:
        # aiohttp's own decoder failed. The stream is dead: mark it ended so aiohttp does not
        # read it again after we answer (that read raises outside any handler), and close.
        cause = exc.__cause__ if isinstance(exc, RequestPayloadError) else exc
        reason = str(getattr(cause, "message", None) or exc).replace("\n", " ").strip()
        stream.feed_eof()
        raise BrokenBody(f"cannot read {encoding or 'request'} body: {reason}") from exc
    return RawBody(bytes(buf), "" if inflated_by_aiohttp else encoding)


def decode_body(body: RawBody, max_bytes: int) -> bytes:
    """Undo gzip/deflate within ``max_bytes``; passthrough encodings are returned as they are."""
    wbits = _WBITS.get(body.encoding)
    if wbits is None:
        return body.data
    name = body.encoding
    out = bytearray()
    data = body.data
    # A gzip body may hold several members back to back (``cat a.gz b.gz``); inflate each.
    while data:
        d = zlib.decompressobj(wbits)
        try:
            while data and not d.eof:
                out += d.decompress(data, max_bytes + 1 - len(out))
                if len(out) > max_bytes:
                    raise BodyTooLarge(
                        f"cannot decode {name} request body: it inflates to more than the limit of "
                        f"{max_bytes} bytes"
                    )
                data = d.unconsumed_tail
        except zlib.error as exc:
            raise ParseError(f"cannot decode {name} request body: {exc}") from exc
        if not d.eof:
            raise ParseError(f"cannot decode {name} request body: it ends before the end of the stream")
        data = d.unused_data
    return bytes(out)
