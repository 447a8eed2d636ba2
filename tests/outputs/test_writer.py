"""Output directory: atomic table files, completion markers, fingerprint refusal, orphaned temp files."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pyarrow.parquet as pq
import pytest

from bulkner.schema import TABLES, Document, Passage, Reject, Tombstone
from bulkner.outputs.writer import FingerprintMismatch, OutputDir, documents_table, rejects_table, tombstones_table
from tests.outputs.shards import write_tables


def test_shard_tables_then_marker(tmp_path):
    out = OutputDir(str(tmp_path / "out"))
    doc = Document("pmid:7", 3, (Passage("title", "A title."), Passage("abstract", "Text.", "METHODS", "METHODS")))
    tables = {
        "documents": documents_table([doc], "s1"),
        "tombstones": tombstones_table([Tombstone("pmid:9")], "s1"),
        "rejects": rejects_table([Reject("read", "missing_pmid", "#3", "no PMID")], "s1"),
    }
    assert out.done("s1") is None
    write_tables(out, "s1", tables, {"documents": 1})
    assert out.done("s1") == {"documents": 1, "rows": {"documents": 2, "tombstones": 1, "rejects": 1}}
    assert out.damage("s1", out.done("s1")) == ""
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
    write_tables(out, "s", {"tombstones": tombstones_table([], "s")}, {})
    assert (tmp_path / "o" / "_done" / "s.json").exists()


def test_two_first_runs_racing_cannot_both_claim(tmp_path):
    barrier = threading.Barrier(8)

    def claim(i: int) -> str:
        out = OutputDir(str(tmp_path / "fresh"))
        barrier.wait()
        try:
            out.claim({"hash": f"h{i}", "model": f"m{i}"})
            return f"h{i}"
        except FingerprintMismatch:
            return "refused"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(claim, range(8)))
    winners = [r for r in results if r != "refused"]
    assert len(winners) == 1
    assert json.loads((tmp_path / "fresh" / "_fingerprint.json").read_text())["hash"] == winners[0]
    assert not [p for p in (tmp_path / "fresh").iterdir() if p.name != "_fingerprint.json"]  # no temp left


def test_same_configuration_racing_both_proceed(tmp_path):
    barrier = threading.Barrier(4)

    def claim(_):
        out = OutputDir(str(tmp_path))
        barrier.wait()
        out.claim({"hash": "same"})

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(claim, range(4)))


def test_object_stores_are_written_in_place(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    url = f"memory://{tmp_path.name}/out"  # an fsspec file system: no rename, like S3
    out = OutputDir(url)
    assert not out.renames
    out.claim({"hash": "a"})
    with pytest.raises(FingerprintMismatch):
        OutputDir(url).claim({"hash": "b"})
    write_tables(out, "s", {"tombstones": tombstones_table([Tombstone("pmid:1")], "s")}, {"n": 1})
    memory = fsspec.filesystem("memory")
    names = sorted(p.rsplit("/", 1)[1] for p in memory.find(f"/{tmp_path.name}/out"))
    assert names == ["_fingerprint.json", "s.json", "s.parquet"]
    assert OutputDir(url).done("s") == {"n": 1, "rows": {"tombstones": 1}}
    assert OutputDir(url).damage("s", OutputDir(url).done("s")) == ""  # footers read through the fsspec file system


def test_orphans_of_the_shards_to_process_are_removed(tmp_path):
    out = OutputDir(str(tmp_path))
    files = [
        tmp_path / "documents" / ".a.parquet.tmp-0f",  # orphans of a shard this run processes
        tmp_path / "_done" / ".a.json.tmp-1e",
        tmp_path / "documents" / ".b.parquet.tmp-2d",  # another run's shard
        tmp_path / "documents" / "a.parquet",  # not a temp file
    ]
    for path in files:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"partial")
    assert out.remove_orphans(["a", "a.b"]) == 2
    assert [p.exists() for p in files] == [False, False, True, True]


def test_undo_removes_the_marker(tmp_path):
    out = OutputDir(str(tmp_path))
    write_tables(out, "s", {}, {"documents": 1})
    assert out.finished() == ["s"]
    out.undo("s")
    out.undo("s")  # nothing to remove
    assert out.done("s") is None and out.finished() == []
