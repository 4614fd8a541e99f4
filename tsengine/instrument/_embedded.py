"""EmbeddedExporter: the SDK's metrics and events written into a tsengine Engine in this process.

Who calls it: an application that embeds the storage engine (``TELEMETRY_EXPORT=embedded`` with
``TELEMETRY_EXPORT_PATH``, or ``get_telemetry().set_exporter(EmbeddedExporter(engine=eng))``).
What comes in: the same registry snapshots, events and data points as
:class:`~tsengine.instrument.HttpExporter`. What goes out: the same rows — tables named like the
exposed samples with tags from the labels plus ``service`` and the field ``value``; events in
``events`` — written with :meth:`tsengine.Engine.write_batches`, one atomic write per batch, so
``SELECT … FROM orders_total`` reads the same whether the data came over HTTP or not.

Queue, worker and failure policy are :class:`~tsengine.instrument._push.BatchExporter`'s:
``export_*`` never block or raise, the bounded queue drops its oldest batch (counted) when full,
writes happen on the worker thread. The engine answering ``Overloaded`` (its buffer bound) or a
storage error is retried with backoff (``retry_after_s`` honoured); ``InvalidInput`` (a bad name,
a type conflict with an existing table) is final — the batch is dropped and counted as
rejected, as the server would answer 400 (:func:`write_to_engine`, shared with the embedded span
exporter of ``_tracing/exporter``).

Engine ownership (:class:`EngineUse`): given ``engine=``, the exporter writes into it and never
closes it (close the exporter first). Given ``path=``, the engine is opened on the first
delivery — on the worker thread, since opening replays the WAL — through :data:`SHARED_ENGINES`,
which keeps one engine per data directory in the process (the engine holds a flock on it), so
the metrics/events exporter and the span exporter of ``TELEMETRY_EXPORT=embedded`` write into the
same engine; it is closed when the last exporter using it shuts down. The engine modules (numpy,
pyarrow, duckdb) are imported only then: importing :mod:`tsengine.instrument` stays cheap.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tsengine.instrument._push import _OK, _REJECTED, _RETRY, Attempt, BatchExporter, QueuedExporter, _Batch

if TYPE_CHECKING:
    from tsengine.engine import Engine
    from tsengine.model import TableBatch

__all__ = [
    "SHARED_ENGINES",
    "EmbeddedExporter",
    "EngineExporter",
    "EngineUse",
    "SharedEngines",
    "write_to_engine",
]

log = logging.getLogger(__name__)


class SharedEngines:
    """Engines opened by exporters, one per data directory, reference-counted. Thread-safe.

    ``acquire`` opens (blocking: WAL replay) or shares; ``release`` closes after the last user.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Path, tuple[Engine, int]] = {}

    def acquire(self, path: Path, settings: dict[str, Any]) -> Engine:
        """The engine of ``path``, opened with ``settings`` if no exporter holds it yet."""
        key = path.resolve()
        with self._lock:
            held = self._open.get(key)
            if held is None:
                from tsengine.engine import Engine

                held = (Engine.open(key, **settings), 0)
            self._open[key] = (held[0], held[1] + 1)
            return held[0]

    def release(self, path: Path) -> None:
        """One user fewer; the last one closes the engine (persists its buffers; blocks)."""
        key = path.resolve()
        with self._lock:
            held = self._open.pop(key, None)
            if held is None:
                return
            engine, refs = held
            if refs > 1:
                self._open[key] = (engine, refs - 1)
                return
        engine.close()

    def holders(self, path: Path) -> int:
        """Exporters holding the engine of ``path`` now (0: not open here)."""
        with self._lock:
            held = self._open.get(path.resolve())
            return held[1] if held is not None else 0


#: The process-wide table: a data directory can only be opened once (flock), so it is global.
SHARED_ENGINES = SharedEngines()


class EngineUse:
    """An exporter's engine: a caller's (never closed), or one of :data:`SHARED_ENGINES` by path.

    Raises:
        ValueError: neither or both of ``engine`` and ``path``.
    """

    def __init__(
        self, engine: Engine | None, path: str | Path | None, settings: dict[str, Any] | None
    ) -> None:
        if (engine is None) == (path is None):
            raise ValueError("cannot configure the embedded exporter: give exactly one of engine= and path=")
        self.engine = engine
        self.path = Path(path) if path is not None else None
        self.settings = dict(settings or {})
        self._logged_open_failure = False

    @property
    def endpoint(self) -> str:
        return f"engine:{self.path}" if self.path is not None else "engine:(in process)"

    def get(self) -> Engine | Attempt:
        """The engine, opened (or shared) on first use; a retry outcome if it cannot be opened."""
        if self.engine is not None:
            return self.engine
        from tsengine.errors import TsengineError

        assert self.path is not None
        try:
            self.engine = SHARED_ENGINES.acquire(self.path, self.settings)
        except (TsengineError, OSError) as exc:
            # A data directory locked by another process, a disk problem: may clear up.
            level = logging.DEBUG if self._logged_open_failure else logging.WARNING
            self._logged_open_failure = True
            log.log(level, "cannot open the embedded engine at %s: %s (will retry)", self.path, exc)
            return _RETRY, None, f"cannot open engine: {exc}"
        return self.engine

    def release(self) -> None:
        """Give back an engine opened by path (closed after its last user); keep a caller's."""
        engine, path = self.engine, self.path
        if engine is not None and path is not None:
            self.engine = None
            SHARED_ENGINES.release(path)


def write_to_engine(
    use: EngineUse,
    batches: Callable[[], list[TableBatch]],
    prepare: Callable[[Engine], None] | None = None,
) -> Attempt:
    """One atomic ``write_batches`` of ``batches()`` into ``use``'s engine, as a delivery outcome.

    ``prepare(engine)`` runs first (declaring a table). ``Overloaded`` and storage errors (a closed
    engine) retry; ``InvalidInput`` (a parse error included) is final.
    """
    from tsengine.errors import InvalidInput, Overloaded, TsengineError

    engine = use.get()
    if isinstance(engine, tuple):
        return engine
    try:
        if prepare is not None:
            prepare(engine)
        engine.write_batches(batches())
    except Overloaded as exc:
        return _RETRY, exc.retry_after_s, str(exc)
    except InvalidInput as exc:
        return _REJECTED, None, str(exc)
    except TsengineError as exc:  # storage errors, a closed engine
        return _RETRY, None, str(exc)
    return _OK, None, ""


class EngineExporter(BatchExporter):
    """What the embedded exporters share: the engine (:class:`EngineUse`), the database, the release.

    Combined with the exporter family: ``EmbeddedExporter(EngineExporter, QueuedExporter)``,
    ``EmbeddedSpanExporter(EngineExporter, SpanExporter)``; ``**kwargs`` go to the family.

    Raises:
        ValueError: neither or both of ``engine`` and ``path``.
    """

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        path: str | Path | None = None,
        db: str = "default",
        engine_settings: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._use = EngineUse(engine, path, engine_settings)
        super().__init__(**kwargs)
        self.path = self._use.path
        self.db = db
        self.endpoint = self._use.endpoint

    @property
    def engine(self) -> Engine | None:
        """The engine written into (None before the first delivery and after shutdown with ``path``)."""
        return self._use.engine

    def _close(self) -> None:
        try:
            self._use.release()
        except Exception:
            self._internal_error("engine_close")


class EmbeddedExporter(EngineExporter, QueuedExporter):
    """Background writes of telemetry into an in-process :class:`tsengine.Engine`.

    Args:
        engine: an open engine to write into (not closed by the exporter).
        path: or a data directory, opened on first use (shared with the other exporters of this
            process writing there) and released on shutdown.
        db: the target database.
        engine_settings: passed to ``Engine.open`` with ``path`` (by the first exporter to open it).
        **kwargs: the queue and worker settings of
            :class:`~tsengine.instrument._push.QueuedExporter` (``interval_s``, ``max_queue``,
            ``batch_size``, ``timeout_s``, ``service``, ``events_table``, ``max_backoff_s``,
            ``registry``).

    Raises:
        ValueError: neither or both of ``engine`` and ``path``.
    """

    def _attempt(self, batch: _Batch, timeout_s: float) -> Attempt:
        return write_to_engine(self._use, lambda: _batches(self._rows(batch), self.db))


def _batches(rows: list[dict[str, Any]], db: str) -> list[Any]:
    """Import rows → one TableBatch per table (a key missing on a row is NULL there), in order."""
    from tsengine.model import TableBatch

    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["table"], []).append(row)
    out = []
    for table, group in groups.items():
        columns = {}
        for kind in ("tags", "fields"):
            names = dict.fromkeys(name for row in group for name in row[kind])
            columns[kind] = {name: [row[kind].get(name) for row in group] for name in names}
        out.append(
            TableBatch.build(
                table, [row["time"] for row in group], tags=columns["tags"], fields=columns["fields"], db=db
            )
        )
    return out
