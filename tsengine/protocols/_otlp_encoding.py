"""The two encodings of OTLP over HTTP, shared by the metrics, traces and logs decoders.

A request body is binary protobuf (``application/x-protobuf``, also accepted as
``application/protobuf``) or OTLP/JSON (``application/json``); the response goes back in the
request's encoding. Pure functions.
"""

from __future__ import annotations

from google.protobuf import json_format
from google.protobuf.message import Message

from tsengine.errors import ParseError

__all__ = [
    "CONTENT_TYPE_JSON",
    "CONTENT_TYPE_PROTOBUF",
    "PROTOBUF_TYPES",
    "encode_message",
    "media_type",
    "unsupported_type",
]

CONTENT_TYPE_PROTOBUF = "application/x-protobuf"
CONTENT_TYPE_JSON = "application/json"
PROTOBUF_TYPES = frozenset({CONTENT_TYPE_PROTOBUF, "application/protobuf"})


def media_type(content_type: str) -> str:
    """``content_type`` without its parameters, lower case (``"application/json"``)."""
    return content_type.split(";", 1)[0].strip().lower()


def unsupported_type(signal: str, content_type: str) -> ParseError:
    """The error for a body in neither encoding (``signal``: "metrics", "traces", "logs")."""
    return ParseError(
        f"cannot decode OTLP {signal}: unsupported content type {content_type!r}, "
        f"expected {CONTENT_TYPE_PROTOBUF} or {CONTENT_TYPE_JSON}"
    )


def encode_message(message: Message, content_type: str) -> bytes:
    """``message`` in the encoding of a request of ``content_type`` (JSON, else protobuf)."""
    if media_type(content_type) == CONTENT_TYPE_JSON:
        return json_format.MessageToJson(message, indent=None).encode()
    return message.SerializeToString()
