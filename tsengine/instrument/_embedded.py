"""EmbeddedExporter: the SDK's metrics and events written into a tsengine Engine in this process.

Who calls it: an application that embeds the storage engine (``TELEMETRY_EXPORT=embedded`` with
``TELEMETRY_EXPORT_PATH``, or ``get_telemetry().set_exporter(EmbeddedExporter(engine=eng))``).
What comes in: the same registry snapshots, events and data points as
:class:`~tsengine.instrument.HttpExporter`. What goes out: the same rows — tables named like the
exposed samples with tags from the labels plus ``service`` and the field ``value``; events in
``events`` — written with :meth:`tsengine.Engine.write_batches`, one atomic write per batch, so
``SELECT … FROM orders_total`` reads the same whether the data came over HTTP or not.

Queue, worker and failure policy are :class:`~tsengine.instrument._push.QueuedExporter`'s:
``export_*`` never block or raise, the bounded queue drops its oldest batch (counted) when full,
writes happen on the worker thread. The engine answering ``Overloaded`` (its buffer bound) or a
storage error is retried with backoff (``retry_after_s`` honoured); ``InvalidInput`` (a bad name,
a type conflict with an existing table) is final — the batch is dropped and counted as
rejected, as the server would answer 400.

Engine ownership: given ``engine=``, the exporter writes into it and never closes it (close the
exporter first). Given ``path=``, it opens ``Engine.open(path, **engine_settings)`` on the first
delivery — on the worker thread, since opening replays the WAL — and closes it in ``shutdown``.
The engine modules (numpy, pyarrow, duckdb) are imported only then: importing
:mod:`tsengine.instrument` stays cheap.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tsengine.instrument._push import _OK, _REJECTED, _RETRY, QueuedExporter, _Batch

if TYPE_CHECKING:
    from tsengine.engine import Engine

__all__ = ["EmbeddedExporter"]

log = logging.getLogger(__name__)


class EmbeddedExporter(QueuedExporter):
    """Background writes of telemetry into an in-process :class:`tsengine.Engine`.

    Args:
        engine: an open engine to write into (not closed by the exporter).
        path: or a data directory, opened on first use and closed on shutdown.
        db: the target database.
        engine_settings: passed to ``Engine.open`` with ``path``.
        **kwargs: the queue and worker settings of
            :class:`~tsengine.instrument._push.QueuedExporter` (``interval_s``, ``max_queue``,
            ``batch_size``, ``timeout_s``, ``service``, ``events_table``, ``max_backoff_s``,
            ``registry``).

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
        if (engine is None) == (path is None):
            raise ValueError("cannot configure the embedded exporter: give exactly one of engine= and path=")
        super().__init__(**kwargs)
        self.engine = engine
        self.path = Path(path) if path is not None else None
        self.db = db
        self.endpoint = f"engine:{self.path}" if self.path is not None else "engine:(in process)"
        self._engine_settings = dict(engine_settings or {})
        self._owns_engine = engine is None
        self._logged_open_failure = False

    def _engine(self) -> Engine:
        if self.engine is None:
            from tsengine.engine import Engine

            assert self.path is not None
            self.engine = Engine.open(self.path, **self._engine_settings)
        return self.engine

    def _attempt(self, batch: _Batch, timeout_s: float) -> tuple[str, float | None, str]:
        from tsengine.errors import InvalidInput, Overloaded, TsengineError

        try:
            engine = self._engine()
        except (TsengineError, OSError) as exc:
            # A data directory locked by another process, a disk problem: may clear up.
            level = logging.DEBUG if self._logged_open_failure else logging.WARNING
            self._logged_open_failure = True
            log.log(level, "cannot open the embedded engine at %s: %s (will retry)", self.path, exc)
            return _RETRY, None, f"cannot open engine: {exc}"
        try:
            batches = _batches(self._rows(batch), self.db)
            engine.write_batches(batches)
        except Overloaded as exc:
            return _RETRY, exc.retry_after_s, str(exc)
        except InvalidInput as exc:
            return _REJECTED, None, str(exc)
        except TsengineError as exc:  # storage errors, a closed engine
            return _RETRY, None, str(exc)
        return _OK, None, ""

    def _close(self) -> None:
        engine = self.engine
        if engine is not None and self._owns_engine:
            self.engine = None
            try:
                engine.close()
            except Exception:
                self._internal_error("engine_close")


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
