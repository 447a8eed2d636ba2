"""Reading a run's output tables: only shards that finished, never a crashed shard's partial files.

A shard counts once its completion marker (``OUT/_done/<shard>.json``) is written; that is the
last file of a shard, and a shard being redone loses its marker first. Works on local paths and
object-store URLs, like ``OutputDir``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from bulkner.schema import TABLES
from bulkner.outputs.writer import OutputDir


def _finished(out: str, table: str) -> tuple[OutputDir, list[str]]:
    """The output directory and its finished shards that have ``table``, in natural order."""
    if table not in TABLES:
        raise ValueError(f"no table {table!r}; the tables are {', '.join(TABLES)}")
    directory = OutputDir(out)
    if directory.fs.get_file_info(directory.root).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no output directory at {out!r}")
    written = directory.listed(table, ".parquet")
    return directory, [shard for shard in directory.finished() if shard in written]


def finished_shards(out: str, table: str) -> list[str]:
    """The finished shards of ``out`` that have ``table``, in natural order."""
    return _finished(out, table)[1]


def read_shard(directory: OutputDir, table: str, shard: str, columns: Sequence[str] | None = None) -> pa.Table:
    """One shard's ``table`` (for readers that go shard by shard to bound memory)."""
    return pq.read_table(directory.path(table, f"{shard}.parquet"), columns=list(columns) if columns is not None else None,
                         filesystem=directory.fs)


def finished_files(out: str, table: str) -> list[str]:
    """The Parquet files of ``table`` from finished shards, as local paths or URLs like ``out``
    (for DuckDB, pandas, Spark...). A table a run does not write (``entities`` of a split) has none."""
    directory, shards = _finished(out, table)
    if directory.fs.type_name == "local":
        return [directory.path(table, f"{shard}.parquet") for shard in shards]
    return [posixpath.join(out.rstrip("/"), table, f"{shard}.parquet") for shard in shards]


def read_table(out: str, table: str, columns: Sequence[str] | None = None, current: bool = False) -> pa.Table:
    """``table`` (``documents``, ``sentences``, ``entities``, ``rejects``, ``tombstones``) over the
    finished shards of the output directory ``out``, optionally only ``columns``.

    ``current=True`` gives the table as the literature stands once every shard is applied in natural
    order (a PubMed baseline, then its update files): each document's rows come from the last
    shard that has the document, and a document whose last record is a deletion has none
    (``tombstones`` then keeps only those deletions; ``rejects`` is returned whole).
    """
    directory, shards = _finished(out, table)
    wanted = list(columns) if columns is not None else None
    if not current or table == "rejects":
        paths = [directory.path(table, f"{shard}.parquet") for shard in shards]
        return ds.dataset(paths, schema=TABLES[table], format="parquet", filesystem=directory.fs).to_table(columns=wanted)
    last = latest_shards(out)
    pieces = []
    for shard in shards:
        piece = read_shard(directory, table, shard)
        keep = [last.get(doc_id) == (shard, table == "tombstones") for doc_id in piece.column("doc_id").to_pylist()]
        pieces.append(piece.filter(pa.array(keep, pa.bool_())))
    result = pa.concat_tables(pieces) if pieces else TABLES[table].empty_table()
    return result.select(wanted) if wanted is not None else result


def latest_shards(out: str) -> dict[str, tuple[str, bool]]:
    """Each doc_id of ``out``'s finished shards → (the last shard in natural order that has it as
    a document or a tombstone, whether that record is a tombstone)."""
    last: dict[str, tuple[str, bool]] = {}
    directory, shards = _finished(out, "documents")
    deleting = set(_finished(out, "tombstones")[1])
    for shard in directory.finished():  # natural order: later shards win
        if shard in shards:
            for doc_id in read_shard(directory, "documents", shard, ["doc_id"]).column("doc_id").to_pylist():
                last[doc_id] = (shard, False)
        if shard in deleting:
            for doc_id in read_shard(directory, "tombstones", shard, ["doc_id"]).column("doc_id").to_pylist():
                last[doc_id] = (shard, True)
    return last
