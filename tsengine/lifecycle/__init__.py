"""Storage lifecycle: retention policies, downsampling rollups, archival, storage budget.

In: an open engine and the ``storage`` config section. Out: a cleanup pass
(:meth:`Lifecycle.run`, the server's ``cleanup`` task and the CLI's ``compact``/``archive``),
the ``archive`` SQL schema, and :meth:`Lifecycle.query_range`. See docs/storage-lifecycle.md.

Modules: ``policies`` (retention per db/table, persisted run-time overrides), ``config`` (the
``storage`` section), ``rollups`` (incremental downsampling), ``archive`` (archive store,
crash-safe moves, reconcile), ``budget`` (eviction planning), ``cleanup`` (the pass).
"""

from tsengine.lifecycle.archive import ArchiveStore
from tsengine.lifecycle.cleanup import Lifecycle
from tsengine.lifecycle.config import Resolution, StorageConfig
from tsengine.lifecycle.policies import RetentionPolicies, defaults_from_env

__all__ = [
    "ArchiveStore",
    "Lifecycle",
    "Resolution",
    "RetentionPolicies",
    "StorageConfig",
    "defaults_from_env",
]
