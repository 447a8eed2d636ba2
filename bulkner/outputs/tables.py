"""Reading a run's output tables: only shards that finished, never a crashed shard's partial files.

A shard counts once its completion marker (``OUT/_done/<shard>.json``) is written; that is the
last file of a shard, and a shard being redone loses its marker first. A finished shard whose
table file is missing, truncated or holds other row counts than its marker records is refused
(``DamagedShard``), never read in part; ``verify`` lists every such shard, and a rerun redoes
them. Works on local paths and object-store URLs, like ``OutputDir``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from bulkner.schema import TABLES
from bulkner.outputs.writer import OutputDir, marker_tables


class DamagedShard(ValueError):
    """A finished shard's table file is missing, unreadable or not what its marker records."""


def _finished(out: str, table: str) -> tuple[OutputDir, list[str]]:
    """The output directory and its finished shards that have ``table``, in natural order.
    Raises ``DamagedShard`` naming each shard whose ``table`` does not match its marker."""
    if table not in TABLES:
        raise ValueError(f"no table {table!r}; the tables are {', '.join(TABLES)}")
    directory = _directory(out)
    shards, damaged = [], []
    for shard in directory.finished():
        marker = directory.done(shard)
        if marker is None or table not in marker_tables(marker):  # undone meanwhile; a table its run does not write
            continue
        if problem := directory.damage(shard, marker, [table]):
            damaged.append(f"{shard}: {problem}")
        shards.append(shard)
    if damaged:
        raise DamagedShard(f"{out}: {len(damaged)} finished shard(s) damaged ({'; '.join(damaged[:5])}"
                           f"{'; ...' if len(damaged) > 5 else ''}); rerun the same command to redo them")
    return directory, shards


def _directory(out: str) -> OutputDir:
    directory = OutputDir(out)
    if directory.fs.get_file_info(directory.root).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no output directory at {out!r}")
    return directory


def verify(out: str) -> tuple[int, dict[str, str]]:
    """Check every finished shard of ``out`` against its marker (``OutputDir.damage``): how many
    were checked, and each damaged shard with what is wrong (a damaged marker is named too)."""
    directory = _directory(out)
    shards = directory.finished()
    damaged = {}
    for shard in shards:
        try:
            marker = directory.done(shard)
        except ValueError as err:  # a marker that is not JSON
            damaged[shard] = str(err)
            continue
        if marker is not None and (problem := directory.damage(shard, marker)):
            damaged[shard] = problem
    return len(shards), damaged


def finished_shards(out: str, table: str) -> list[str]:
    """The finished shards of ``out`` that have ``table``, in natural order."""
    return _finished(out, table)[1]


def read_shard(directory: OutputDir, table: str, shard: str, columns: Sequence[str] | None = None) -> pa.Table:
    """One shard's ``table`` (for readers that go shard by shard to bound memory). A column the
    schema gained after the shard was written (``origin``, ``concept_id``) reads as nulls."""
    path = directory.path(table, f"{shard}.parquet")
    present = set(pq.read_schema(path, filesystem=directory.fs).names)
    wanted = list(columns) if columns is not None else TABLES[table].names
    result = pq.read_table(path, columns=[c for c in wanted if c in present], filesystem=directory.fs)
    for name in (c for c in wanted if c not in present):
        result = result.append_column(TABLES[table].field(name), pa.nulls(result.num_rows, TABLES[table].field(name).type))
    return result.select(wanted)


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
