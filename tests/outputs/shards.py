"""Writing whole shards in tests: what the shard pipeline writes chunk by chunk, in one go."""

from __future__ import annotations

import pyarrow as pa

from bulkner.outputs.writer import OutputDir


def write_tables(out: OutputDir, shard: str, tables: dict[str, pa.Table], stats: dict) -> None:
    """Write every table of ``shard`` whole, then its completion marker."""
    with out.shard_writer(shard, {name: table.schema for name, table in tables.items()}) as writer:
        for name, table in tables.items():
            writer.write(name, table)
        writer.commit(stats)
