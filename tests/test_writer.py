"""Output directory: atomic table files, completion markers, fingerprint refusal."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from bulkner.schema import TABLES, Document, Passage, Reject, Tombstone
from bulkner.writer import FingerprintMismatch, OutputDir, documents_table, rejects_table, tombstones_table


def test_shard_tables_then_marker(tmp_path):
    out = OutputDir(str(tmp_path / "out"))
    doc = Document("pmid:7", 3, (Passage("title", "A title."), Passage("abstract", "Text.", "METHODS", "METHODS")))
    tables = {
        "documents": documents_table([doc], "s1"),
        "tombstones": tombstones_table([Tombstone("pmid:9")], "s1"),
        "rejects": rejects_table([Reject("read", "missing_pmid", "#3", "no PMID")], "s1"),
    }
    assert out.done("s1") is None
    out.write_shard("s1", tables, {"documents": 1})
    assert out.done("s1") == {"documents": 1}
    docs = pq.read_table(tmp_path / "out" / "documents" / "s1.parquet")
    assert docs.schema.equals(TABLES["documents"])
    assert docs.column("passage_label").to_pylist() == [None, "METHODS"]
    assert docs.column("doc_version").to_pylist() == [3, 3]
    assert pq.read_table(tmp_path / "out" / "tombstones" / "s1.parquet").column("doc_id").to_pylist() == ["pmid:9"]
    leftovers = [p for p in (tmp_path / "out").rglob("*") if ".tmp-" in p.name]
    assert not leftovers


def test_fingerprint_is_recorded_then_enforced(tmp_path):
    out = OutputDir(str(tmp_path))
    out.claim({"hash": "a", "model": "m1"})
    out.claim({"hash": "a", "model": "m1"})
    with pytest.raises(FingerprintMismatch, match="model"):
        OutputDir(str(tmp_path)).claim({"hash": "b", "model": "m2"})


def test_file_url(tmp_path):
    out = OutputDir(f"file://{tmp_path}/o")
    out.write_shard("s", {"tombstones": tombstones_table([], "s")}, {})
    assert (tmp_path / "o" / "_done" / "s.json").exists()
