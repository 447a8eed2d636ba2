"""The output directory: one Parquet file per table and shard, atomic writes, completion markers.

Layout (DESIGN.md, Output directory)::

    OUT/_fingerprint.json             the run's fingerprint, written by the first run
    OUT/<table>/<shard>.parquet       documents, sentences, entities, rejects, tombstones
    OUT/_done/<shard>.json            written last: stats and fingerprint of the shard

Every file is written under a temporary name and renamed into place, so a crash leaves either
the old file or the new one. Works on local paths and on ``pyarrow.fs`` URLs (``s3://``...).
"""

from __future__ import annotations

import json
import uuid
from typing import Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from bulkner.schema import TABLES, Document, Entity, Reject, Sentence, Tombstone

DONE = "_done"
FINGERPRINT = "_fingerprint.json"


class FingerprintMismatch(RuntimeError):
    """The output directory holds results of a different configuration."""


class OutputDir:
    """An output directory on a local disk or an object store."""

    def __init__(self, out: str) -> None:
        self.fs, self.root = pafs.FileSystem.from_uri(out) if "://" in out else (pafs.LocalFileSystem(), out)
        self.root = self.root.rstrip("/")
        self.fs.create_dir(self.root, recursive=True)

    def path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def _write_bytes(self, path: str, data: bytes) -> None:
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        folder, name = path.rsplit("/", 1)
        tmp = f"{folder}/.{name}.tmp-{uuid.uuid4().hex}"  # hidden: dataset readers skip dot files
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, path)

    def _read_json(self, path: str) -> dict | None:
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read())

    def claim(self, fingerprint: dict) -> None:
        """Record ``fingerprint`` for this directory, or refuse if it holds another one."""
        existing = self._read_json(self.path(FINGERPRINT))
        if existing is None:
            self._write_bytes(self.path(FINGERPRINT), json.dumps(fingerprint, indent=2, sort_keys=True).encode())
        elif existing.get("hash") != fingerprint["hash"]:
            changed = sorted(k for k in set(existing) | set(fingerprint) if existing.get(k) != fingerprint.get(k))
            raise FingerprintMismatch(
                f"{self.root} holds results of another configuration (differs in: {', '.join(changed)}); "
                "use a new --out directory or delete the old one, results are never mixed"
            )

    def done(self, shard: str) -> dict | None:
        """The completion marker of ``shard`` if it finished, else None."""
        return self._read_json(self.path(DONE, f"{shard}.json"))

    def write_shard(self, shard: str, tables: dict[str, pa.Table], stats: dict) -> None:
        """Write every table of ``shard`` atomically, then its completion marker."""
        for name, table in tables.items():
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression="zstd")
            self._write_bytes(self.path(name, f"{shard}.parquet"), sink.getvalue().to_pybytes())
        self._write_bytes(self.path(DONE, f"{shard}.json"), json.dumps(stats, indent=2, sort_keys=True).encode())


def documents_table(documents: Sequence[Document], source: str) -> pa.Table:
    rows = [
        {
            "doc_id": d.doc_id,
            "doc_version": d.version,
            "source": source,
            "passage_index": i,
            "passage_kind": p.kind,
            "passage_label": p.label,
            "passage_category": p.category,
            "language": p.language,
            "text": p.text,
            "pmid": d.pmid,
            "doi": d.doi,
            "license": d.license,
        }
        for d in documents
        for i, p in enumerate(d.passages)
    ]
    return pa.Table.from_pylist(rows, schema=TABLES["documents"])


def sentences_table(sentences: Sequence[Sentence]) -> pa.Table:
    columns = ("doc_id", "doc_version", "passage_index", "sentence_index", "start", "end", "text")
    rows = [{c: getattr(s, c) for c in columns} for s in sentences]
    return pa.Table.from_pylist(rows, schema=TABLES["sentences"])


def entities_table(entities: Sequence[Entity], source: str) -> pa.Table:
    rows = []
    for e in entities:
        s = e.sentence
        text = s.text[e.start - s.start : e.end - s.start]
        rows.append(
            {
                "doc_id": s.doc_id,
                "doc_version": s.doc_version,
                "passage_index": s.passage_index,
                "sentence_index": s.sentence_index,
                "start": e.start,
                "end": e.end,
                "text": text,
                "type": e.type,
                "score": e.score,
                "source": source,
            }
        )
    return pa.Table.from_pylist(rows, schema=TABLES["entities"])


def tombstones_table(tombstones: Sequence[Tombstone], source: str) -> pa.Table:
    return pa.Table.from_pylist([{"doc_id": t.doc_id, "source": source} for t in tombstones], schema=TABLES["tombstones"])


def rejects_table(rejects: Sequence[Reject], source: str) -> pa.Table:
    rows = [{"source": source, "record": r.record, "stage": r.stage, "reason": r.reason, "detail": r.detail} for r in rejects]
    return pa.Table.from_pylist(rows, schema=TABLES["rejects"])
