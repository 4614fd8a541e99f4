"""Persistence: partition paths, Parquet files, manifests, compaction and retention.

Frozen ring-buffer chunks come in; immutable Parquet files under the Hive layout of
:mod:`tsengine.persist.paths` go out. Called by the engine's background persister and by the
maintenance tasks; never by request handlers directly.
"""
