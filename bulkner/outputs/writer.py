"""The output directory: one Parquet file per table and shard, atomic writes, completion markers.

Layout (DESIGN.md, Output directory)::

    OUT/_fingerprint.json             the run's fingerprint, written by the first run
    OUT/<table>/<shard>.parquet       documents, sentences, entities, rejects, tombstones
    OUT/_done/<shard>.json            written last: stats, fingerprint and input identity of the shard

A crash leaves either the old file or the new one. On local disks and HDFS every file is written
under a hidden temporary name and renamed into place; temporary files an interrupted run left are
removed by the next run that processes their shard (``remove_orphans``). On object stores
(``s3://``, ``gs://``, ``abfs://``, fsspec URLs) a file is written in place: an object appears only
when its upload completes, and they have no rename (a copy and a delete would cost twice).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import attrgetter
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyarrow.lib import ArrowInvalid

from bulkner.connectors.fs import filesystem, natural_key
from bulkner.schema import TABLES, Document, Entity, Reject, Sentence, Tombstone

log = logging.getLogger(__name__)

DONE = "_done"
FINGERPRINT = "_fingerprint.json"
LOCK = "_lock"
RENAMING = ("local", "hdfs")
"""``pyarrow.fs`` file systems written through a temporary file and a rename; others in place."""
TEMP = ".tmp-"
CLAIM_TEMP_AGE_S = 600
"""A fingerprint temp file older than this was left by a killed claim (``remove_orphans``)."""


class FingerprintMismatch(RuntimeError):
    """The output directory holds results of a different configuration."""


class OutputBusy(ValueError):
    """Another run holds the output directory (``OutputDir.lock``)."""


SPLIT_TABLES = ("documents", "sentences", "tombstones", "rejects")
"""The tables every shard writes; a run with a model writes ``entities`` too."""


def marker_tables(marker: dict) -> dict[str, int | None]:
    """The tables a finished shard wrote, with the rows its marker records (None for markers from
    before row counts were recorded: those tables are known by the run's kind)."""
    if "rows" in marker:
        return marker["rows"]
    return dict.fromkeys(SPLIT_TABLES + (("entities",) if "entities_by_type" in marker else ()))


def _temp_of(name: str) -> str | None:
    """The shard whose temporary file ``name`` is (``.<shard>.parquet.tmp-<hex>``), else None."""
    if not name.startswith(".") or TEMP not in name:
        return None
    stem = name[1 : name.rindex(TEMP)]
    for suffix in (".parquet", ".json"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return None


class OutputDir:
    """An output directory on a local disk or an object store; nothing is created until ``claim``."""

    def __init__(self, out: str) -> None:
        self.fs, root = filesystem(out)
        self.root = root.rstrip("/")
        self.renames = self.fs.type_name in RENAMING

    def path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def _temp(self, path: str) -> str:
        folder, name = path.rsplit("/", 1)
        return f"{folder}/.{name}{TEMP}{uuid.uuid4().hex}"  # hidden: dataset readers skip dot files

    def _write_bytes(self, path: str, data: bytes) -> None:
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        if not self.renames:
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        tmp = self._temp(path)
        try:
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, path)
        except BaseException:
            if self.fs.get_file_info(tmp).is_file:
                self.fs.delete_file(tmp)
            raise

    def read_json(self, path: str) -> dict | None:
        """A JSON metadata file (fingerprint, marker) of this directory, None when there is none;
        a damaged one is a ``ValueError`` naming it."""
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            data = f.read()
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is damaged (not JSON: {err}); remove it to redo what it records") from err

    def claim(self, fingerprint: dict) -> None:
        """Record ``fingerprint`` for this directory, or refuse if it holds another one.

        Claiming a fresh directory is a conditional create: of two runs claiming it at once, one
        wins and the other is refused (or goes on, when its fingerprint is the same). On local disks
        the file is written whole and hard-linked into place, which fails when it exists. Object
        stores through ``pyarrow.fs`` have no conditional put: the fingerprint is written, read back
        and compared, which refuses the first writer when a second one landed before the read-back;
        two runs whose writes and read-backs interleave exactly (within milliseconds) can both
        proceed. Start concurrent runs into one new object-store directory one after the other.
        """
        self.fs.create_dir(self.root, recursive=True)
        existing = self.read_json(self.path(FINGERPRINT))
        if existing is None:
            existing = self._create(self.path(FINGERPRINT), json.dumps(fingerprint, indent=2, sort_keys=True).encode())
        if existing.get("hash") != fingerprint["hash"]:
            changed = sorted(k for k in set(existing) | set(fingerprint) if existing.get(k) != fingerprint.get(k))
            raise FingerprintMismatch(
                f"{self.root} holds results of another configuration (differs in: {', '.join(changed)}); "
                "use a new --out directory or delete the old one, results are never mixed"
            )

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold this directory for one run, so no other run removes its temporary files or writes
        its shards at the same time; raises ``OutputBusy`` naming the run that holds it.

        On local disks an advisory ``flock`` on ``OUT/_lock``, which the kernel releases when the
        holder exits, even killed: a killed run never leaves the directory locked. Object stores
        and HDFS have no lock: start runs into one such directory one after the other.
        """
        if self.fs.type_name != "local":
            yield
            return
        path = self.path(LOCK)
        with open(path, "a+", encoding="utf-8") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise OutputBusy(f"{self.root} is in use by another bulkner run ({holder}); wait for it to end, "
                                 "or write to another --out") from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            f.flush()
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _create(self, path: str, data: bytes) -> dict:
        """Write ``path`` unless it exists; what it holds afterwards (ours or a concurrent writer's)."""
        if self.fs.type_name != "local":
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return self.read_json(path)
        tmp = self._temp(path)
        with open(tmp, "xb") as f:
            f.write(data)
        try:
            os.link(tmp, path)  # atomic, and fails when path exists: one claimant wins
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        return self.read_json(path)

    def done(self, shard: str) -> dict | None:
        """The completion marker of ``shard`` if it finished, else None."""
        return self.read_json(self.path(DONE, f"{shard}.json"))

    def damage(self, shard: str, marker: dict, tables: Iterable[str] | None = None) -> str:
        """Why the finished ``shard``'s table files (those of ``tables``, default all) do not match its
        ``marker``: a file missing, unreadable (truncated) or with other row counts; ``""`` when
        they match. Reads each file's Parquet footer only."""
        problems = []
        for name, rows in marker_tables(marker).items():
            if tables is not None and name not in tables:
                continue
            try:
                found = pq.read_metadata(self.path(name, f"{shard}.parquet"), filesystem=self.fs).num_rows
            except FileNotFoundError:
                problems.append(f"its {name} table is missing")
            except (OSError, ArrowInvalid) as err:
                problems.append(f"its {name} table is unreadable ({err})")
            else:
                if rows is not None and found != rows:
                    problems.append(f"its {name} table has {found} rows, its marker says {rows}")
        return "; ".join(problems)

    def undo(self, shard: str) -> None:
        """Remove the completion marker of ``shard`` (before redoing it: readers then skip it)."""
        marker = self.path(DONE, f"{shard}.json")
        if self.fs.get_file_info(marker).is_file:
            self.fs.delete_file(marker)

    def listed(self, folder: str, suffix: str) -> set[str]:
        """Stems of the files ``folder/<stem><suffix>`` (hidden temporary files left out)."""
        found = self.fs.get_file_info(pafs.FileSelector(self.path(folder), allow_not_found=True))
        names = (i.base_name for i in found if i.is_file)
        return {n[: -len(suffix)] for n in names if n.endswith(suffix) and not n.startswith(".")}

    def finished(self) -> list[str]:
        """The shards with a completion marker, in natural order."""
        return sorted(self.listed(DONE, ".json"), key=natural_key)

    def remove_orphans(self, shards: Iterable[str]) -> int:
        """Remove the temporary files of ``shards`` that an interrupted run left; how many.

        Only the shards of this run: a concurrent run into the same directory writing other shards
        keeps its files. Object stores have none (files are written in place).
        """
        if not self.renames:
            return 0
        wanted = set(shards)
        removed = 0
        for folder in (*TABLES, DONE):
            for info in self.fs.get_file_info(pafs.FileSelector(self.path(folder), allow_not_found=True)):
                if info.is_file and _temp_of(info.base_name) in wanted:
                    self.fs.delete_file(info.path)
                    removed += 1
        # a claim killed between writing and linking its fingerprint; a live claim holds it for
        # microseconds, so only old ones go (concurrent claimers keep theirs)
        stale = time.time_ns() - CLAIM_TEMP_AGE_S * 10**9
        for info in self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True)):
            if info.is_file and info.base_name.startswith(f".{FINGERPRINT}{TEMP}") and (info.mtime_ns or 0) < stale:
                self.fs.delete_file(info.path)
                removed += 1
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted run in %s", removed, self.root)
        return removed

    @contextlib.contextmanager
    def shard_writer(self, shard: str, schemas: dict[str, pa.Schema]) -> Iterator["ShardWriter"]:
        """A ``ShardWriter`` for the tables ``schemas`` names; files not committed when the block
        ends (an error, a crash) are removed."""
        writer = ShardWriter(self, shard, schemas)
        try:
            yield writer
        finally:
            writer.abort()


class ShardWriter:
    """The tables of one shard written in pieces (one Parquet row group or more per ``write``):
    memory stays that of a piece, not of the shard. Nothing is visible until ``commit``: on local
    disks and HDFS each table goes to a hidden temporary file renamed into place at the commit; on
    object stores each is uploaded in place while written, and the completion marker written last
    is what makes the shard finished (``tables.read_table`` reads only finished shards)."""

    def __init__(self, out: OutputDir, shard: str, schemas: dict[str, pa.Schema]) -> None:
        self.out, self.shard = out, shard
        self.targets = {name: out.path(name, f"{shard}.parquet") for name in schemas}
        self.files = {name: out._temp(path) if out.renames else path for name, path in self.targets.items()}
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.rows = dict.fromkeys(schemas, 0)
        self.committed = False
        try:
            for name, schema in schemas.items():
                out.fs.create_dir(out.path(name), recursive=True)
                self.writers[name] = pq.ParquetWriter(self.files[name], schema, filesystem=out.fs, compression="zstd")
        except BaseException:
            self.abort()
            raise

    def write(self, name: str, table: pa.Table) -> None:
        if table.num_rows:
            self.writers[name].write_table(table)
            self.rows[name] += table.num_rows

    def commit(self, stats: dict) -> dict:
        """Close every table, move it into place, then write the completion marker: ``stats`` and
        each table's ``rows`` (``OutputDir.damage`` checks them)."""
        for writer in self.writers.values():
            writer.close()
        if self.out.renames:
            for name, target in self.targets.items():
                self.out.fs.move(self.files[name], target)
        self.committed = True
        marker = stats | {"rows": self.rows}
        self.out._write_bytes(self.out.path(DONE, f"{self.shard}.json"), json.dumps(marker, indent=2, sort_keys=True).encode())
        return marker

    def abort(self) -> None:
        """Close and remove what an uncommitted shard wrote (no-op after ``commit``)."""
        if self.committed:
            return
        for name, writer in self.writers.items():
            with contextlib.suppress(Exception):
                writer.close()
            with contextlib.suppress(Exception):
                if self.out.fs.get_file_info(self.files[name]).is_file:
                    self.out.fs.delete_file(self.files[name])


def _table(name: str, items: Sequence, columns: dict[str, Callable[[Any], Any]]) -> pa.Table:
    """Table ``name`` with one row per item, built a column at a time (``columns`` gives each
    column's value of an item): no dict per row, so a chunk's table costs about its values' size."""
    schema = TABLES[name]
    return pa.Table.from_arrays([pa.array([columns[f.name](x) for x in items], f.type) for f in schema], schema=schema)


def documents_table(documents: Sequence[Document], source: str) -> pa.Table:
    passages = [(d, i, p) for d in documents for i, p in enumerate(d.passages)]
    return _table("documents", passages, {
        "doc_id": lambda r: r[0].doc_id, "doc_version": lambda r: r[0].version, "source": lambda r: source,
        "passage_index": lambda r: r[1], "passage_kind": lambda r: r[2].kind, "passage_label": lambda r: r[2].label,
        "passage_category": lambda r: r[2].category, "language": lambda r: r[2].language, "text": lambda r: r[2].text,
        "pmid": lambda r: r[0].pmid, "doi": lambda r: r[0].doi, "license": lambda r: r[0].license,
    })


def sentences_table(sentences: Sequence[Sentence]) -> pa.Table:
    return _table("sentences", sentences, {f.name: attrgetter(f.name) for f in TABLES["sentences"]})


def entities_table(entities: Sequence[Entity], source: str) -> pa.Table:
    return _table("entities", entities, {
        "doc_id": lambda e: e.sentence.doc_id, "doc_version": lambda e: e.sentence.doc_version,
        "passage_index": lambda e: e.sentence.passage_index, "sentence_index": lambda e: e.sentence.sentence_index,
        "start": attrgetter("start"), "end": attrgetter("end"),
        "text": attrgetter("text"),
        "type": attrgetter("type"), "score": attrgetter("score"), "source": lambda e: source,
        "origin": attrgetter("origin"), "concept_id": attrgetter("concept_id"), "link_score": attrgetter("link_score"),
    })


def tombstones_table(tombstones: Sequence[Tombstone], source: str) -> pa.Table:
    return pa.Table.from_pylist([{"doc_id": t.doc_id, "source": source} for t in tombstones], schema=TABLES["tombstones"])


def rejects_table(rejects: Sequence[Reject], source: str) -> pa.Table:
    rows = [{"source": source, "record": r.record, "stage": r.stage, "reason": r.reason, "detail": r.detail} for r in rejects]
    return pa.Table.from_pylist(rows, schema=TABLES["rejects"])
