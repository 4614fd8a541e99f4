"""Server configuration: one frozen dataclass, built once at the edge.

Sources, later ones winning: the defaults below, an optional YAML or TOML file
(``tsengine serve --config FILE``), ``TSENGINE_<FIELD>`` environment variables, then the CLI's
flags. Inner code receives a :class:`ServerConfig` and never reads the environment. Every error
is an :class:`~tsengine.errors.InvalidInput` naming the key (file key or variable) at fault.

A config file holds the server keys at the top level, ``tokens`` as a list, and the engine's
:class:`~tsengine.settings.Settings` under ``engine``::

    host: 0.0.0.0
    port: 8181
    data_dir: /var/lib/tsengine
    tokens:
      - {token: "s3cret-writer", scopes: [write], name: telegraf}
      - {token: "s3cret-admin", scopes: [admin]}
    engine: {fsync: always, max_buffer_bytes: 536870912}

In the environment, ``TSENGINE_TOKENS`` is ``TOKEN:scope[+scope...]`` entries separated by
commas or whitespace, e.g. ``TSENGINE_TOKENS="w1:write r1:read a1:admin"``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tsengine.errors import InvalidInput

__all__ = ["DEFAULT_PORT", "SCOPES", "ServerConfig", "Token", "load_config"]

#: Default listening port (InfluxDB 3's; clear of Prometheus 9090 and VictoriaMetrics 8428, so the
#: benchmark can run both side by side).
DEFAULT_PORT = 8181

#: Scopes a token may carry; ``admin`` implies the other two.
SCOPES = ("write", "read", "admin")

_ENV_PREFIX = "TSENGINE_"


@dataclass(frozen=True)
class Token:
    """An API token and what it may do."""

    token: str = field(repr=False)
    scopes: frozenset[str]
    name: str = ""

    def __post_init__(self) -> None:
        if not self.token or any(c.isspace() for c in self.token) or ":" in self.token:
            raise InvalidInput(
                f"cannot use token {self.name or '(unnamed)'}: empty, or contains ':' or a space"
            )
        bad = set(self.scopes) - set(SCOPES)
        if bad or not self.scopes:
            raise InvalidInput(
                f"cannot use token {self.name or '(unnamed)'}: scopes {sorted(self.scopes)} "
                f"must be a non-empty subset of {SCOPES}"
            )

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True)
class ServerConfig:
    """Every tunable of the HTTP server, with its default and its reason."""

    #: Address to bind; with no tokens configured only a loopback address is allowed.
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    #: The engine's data directory.
    data_dir: str = "./data"
    #: API tokens; empty means no authentication (loopback only).
    tokens: tuple[Token, ...] = ()
    #: Largest request body as sent (compressed or not): 413 beyond it. VictoriaMetrics' default
    #: is 32 MiB; a 10,000-line TSBS batch is about 1.3 MB.
    max_body_bytes: int = 32 * 1024 * 1024
    #: Largest body after gzip/snappy decoding: 413 beyond it (decompression bombs).
    max_decompressed_bytes: int = 128 * 1024 * 1024
    #: Rows (lines, samples, data points) one request may carry: 400 beyond it.
    max_rows_per_request: int = 1_000_000
    #: Tags (labels) one row may carry: 400 beyond it (Prometheus' and VictoriaMetrics' default
    #: limits are in the tens; 64 leaves room for OTLP resource attributes).
    max_labels_per_series: int = 64
    #: Longest tag name and tag value in bytes (UTF-8): 400 beyond them.
    max_label_name_bytes: int = 128
    max_label_value_bytes: int = 4096
    #: Rows a SQL answer carries at most; the answer says ``truncated`` beyond it.
    query_max_rows: int = 100_000
    #: Samples one remote-read request may return (they are built as protobuf in memory).
    max_read_samples: int = 5_000_000
    #: Seconds after which a query is interrupted (passed to the engine's settings).
    query_timeout_s: float = 30.0
    #: Threads decoding, parsing and writing ingestion requests off the event loop.
    worker_threads: int = 4
    #: Threads running SQL (each query may take up to ``query_timeout_s``).
    query_workers: int = 2
    #: Write requests admitted at once (their bodies are in memory: at most this many times
    #: ``max_body_bytes``); later ones wait, as VictoriaMetrics' -maxConcurrentInserts does.
    max_concurrent_writes: int = 8
    #: Seconds a write waits for admission before it gets 503 with Retry-After.
    write_queue_timeout_s: float = 10.0
    #: Seconds between psutil samples of the process (background thread, never on a request).
    process_sample_interval_s: float = 5.0
    #: Seconds in-flight requests get to finish on shutdown.
    shutdown_timeout_s: float = 30.0
    #: Child processes that decode OTLP trace bodies (pure-Python protobuf work kept off the
    #: server's GIL); 0 decodes in the ingest worker; -1 picks for the machine (2 with >1 core).
    span_decode_processes: int = -1
    #: Threads of the pool the scheduler's background tasks run on.
    background_workers: int = 2
    #: Fraction of each task interval added or removed at random (0..0.5).
    task_jitter: float = 0.1
    #: Engine settings (``tsengine.settings.Settings`` field names) from a config file.
    engine: Mapping[str, Any] = field(default_factory=dict)
    #: Background task settings (``intervals: {task_name: seconds}``, ...) from a config file.
    tasks: Mapping[str, Any] = field(default_factory=dict)
    #: Alerting settings (rules file, channels, routes) from a config file; see docs/alerting.md.
    alerting: Mapping[str, Any] = field(default_factory=dict)
    #: Retention, downsampling, archival and storage-budget settings from a config file.
    storage: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.span_decode_processes < -1:
            raise InvalidInput(
                f"cannot use setting span_decode_processes={self.span_decode_processes!r}: must be >= -1"
            )
        if not 0 <= self.task_jitter <= 0.5:
            raise InvalidInput(f"cannot use setting task_jitter={self.task_jitter!r}: must be 0..0.5")
        if not 0 <= self.port <= 65535:
            raise InvalidInput(f"cannot use setting port={self.port!r}: must be 0..65535")
        for name in (
            "max_body_bytes",
            "max_decompressed_bytes",
            "max_rows_per_request",
            "max_labels_per_series",
            "max_label_name_bytes",
            "max_label_value_bytes",
            "query_max_rows",
            "max_read_samples",
            "worker_threads",
            "query_workers",
            "max_concurrent_writes",
            "background_workers",
        ):
            if getattr(self, name) < 1:
                raise InvalidInput(f"cannot use setting {name}={getattr(self, name)!r}: must be >= 1")
        for name in (
            "query_timeout_s",
            "process_sample_interval_s",
            "shutdown_timeout_s",
            "write_queue_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise InvalidInput(f"cannot use setting {name}={getattr(self, name)!r}: must be > 0")
        seen: set[str] = set()
        for t in self.tokens:
            if t.token in seen:
                raise InvalidInput(f"cannot use tokens: token {t.name or '(unnamed)'} is listed twice")
            seen.add(t.token)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.tokens)

    def replace(self, **changes: Any) -> ServerConfig:
        unknown = set(changes) - _FIELDS
        if unknown:
            raise InvalidInput(f"cannot use settings {sorted(unknown)}: unknown setting")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, base: ServerConfig | None = None
    ) -> ServerConfig:
        """Apply ``TSENGINE_<FIELD>`` variables on top of ``base`` (default: the defaults)."""
        env = os.environ if environ is None else environ
        base = base or cls()
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = _ENV_PREFIX + f.name.upper()
            if f.name in _SECTIONS or key not in env:
                continue
            raw = env[key]
            if f.name == "tokens":
                values["tokens"] = _tokens_from_env(raw, key)
            else:
                values[f.name] = _coerce(getattr(base, f.name), raw, key)
        if "ALERTS_MAX_ALERTS" in env:  # the SDK's variable, honoured by the server's alert manager too
            raw = env["ALERTS_MAX_ALERTS"]
            try:
                max_alerts = int(raw)
            except ValueError:
                raise InvalidInput(f"cannot use ALERTS_MAX_ALERTS={raw!r}: must be an integer") from None
            values["alerting"] = {**base.alerting, "max_alerts": max_alerts}
        try:
            return dataclasses.replace(base, **values)
        except InvalidInput as exc:
            raise InvalidInput(f"cannot read the TSENGINE_* environment: {exc.reason}") from exc

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "config") -> ServerConfig:
        """Build from a parsed config file; errors name ``source`` and the key."""
        if not isinstance(data, Mapping):
            raise InvalidInput(f"cannot read {source}: the top level must be a mapping")
        defaults = cls()
        values: dict[str, Any] = {}
        for key, raw in data.items():
            if key not in _FIELDS:
                raise InvalidInput(f"cannot read {source}: unknown key {key!r} (known: {sorted(_FIELDS)})")
            where = f"{source}: {key}"
            if key == "tokens":
                values[key] = _tokens_from_list(raw, where)
            elif key in _SECTIONS:
                if not isinstance(raw, Mapping):
                    raise InvalidInput(f"cannot read {where}: must be a mapping of {key} settings")
                values[key] = dict(raw)
            else:
                default = getattr(defaults, key)
                values[key] = (
                    _coerce(default, raw, where) if isinstance(raw, str) else _check_type(default, raw, where)
                )
        try:
            return cls(**values)
        except InvalidInput as exc:
            raise InvalidInput(f"cannot read {source}: {exc.reason}") from exc


_FIELDS = frozenset(f.name for f in dataclasses.fields(ServerConfig))
#: Fields that are nested mappings, read from a config file only (each owner parses its own).
_SECTIONS = frozenset({"engine", "tasks", "alerting", "storage"})


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Defaults, then the file at ``path`` (``.toml`` or YAML) if given, then the environment."""
    base = ServerConfig()
    if path is not None:
        p = Path(path)
        try:
            text = p.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read config file {str(p)!r}: {exc.strerror}") from exc
        try:
            data = tomllib.loads(text.decode()) if p.suffix == ".toml" else yaml.safe_load(text)
        except (tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read config file {str(p)!r}: {exc}") from exc
        base = ServerConfig.from_mapping(data or {}, source=f"config file {str(p)!r}")
    return ServerConfig.from_env(environ, base=base)


def _coerce(default: Any, raw: str, key: str) -> Any:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        return raw
    except ValueError as exc:
        raise InvalidInput(f"cannot read {key}={raw!r}: {exc}") from exc


def _check_type(default: Any, value: Any, where: str) -> Any:
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(default):
        raise InvalidInput(f"cannot read {where}: expected {type(default).__name__}, got {value!r}")
    return value


def _tokens_from_env(raw: str, key: str) -> tuple[Token, ...]:
    out = []
    for i, entry in enumerate(raw.replace(",", " ").split()):
        secret, sep, scopes = entry.partition(":")
        if not sep:
            raise InvalidInput(f"cannot read {key}: entry {i + 1} is not TOKEN:scope[+scope...]")
        try:
            out.append(Token(secret, frozenset(scopes.split("+")), name=f"{key}[{i + 1}]"))
        except InvalidInput as exc:
            raise InvalidInput(f"cannot read {key}: {exc.reason}") from exc
    return tuple(out)


def _tokens_from_list(raw: Any, where: str) -> tuple[Token, ...]:
    if not isinstance(raw, list):
        raise InvalidInput(f"cannot read {where}: must be a list of {{token, scopes, name}}")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or not isinstance(item.get("token"), str):
            raise InvalidInput(f"cannot read {where}[{i}]: must be a mapping with a string 'token'")
        unknown = set(item) - {"token", "scopes", "name"}
        if unknown:
            raise InvalidInput(f"cannot read {where}[{i}]: unknown keys {sorted(unknown)}")
        scopes = item.get("scopes", [])
        if isinstance(scopes, str) or not isinstance(scopes, list):
            raise InvalidInput(f"cannot read {where}[{i}].scopes: must be a list of {SCOPES}")
        try:
            out.append(Token(item["token"], frozenset(scopes), name=str(item.get("name", f"tokens[{i}]"))))
        except InvalidInput as exc:
            raise InvalidInput(f"cannot read {where}[{i}]: {exc.reason}") from exc
    return tuple(out)
