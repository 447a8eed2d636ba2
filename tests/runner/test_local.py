"""The local runner's reruns: a changed input is redone, a crash leaves nothing behind."""

from __future__ import annotations

import gzip
import logging
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from bulkner.cli import sample_input
from bulkner.config import RunConfig
from bulkner.pipeline.results import RunSummary
from bulkner.runner import local

SAMPLE = gzip.decompress(Path(sample_input()).read_bytes())


def split(inputs: Path, out: Path) -> RunSummary:
    return local.run([str(inputs)], RunConfig(out=str(out)), with_model=False, progress=False)


def doc_ids(out: Path, shard: str) -> set[str]:
    return set(pq.read_table(out / "documents" / f"{shard}.parquet").column("doc_id").to_pylist())


def statuses(summary: RunSummary) -> dict[str, str]:
    return {r.shard: r.status for r in summary.shards}


def test_a_repaired_input_is_redone_and_the_others_skipped(tmp_path, caplog):
    (tmp_path / "in").mkdir()
    cut, whole = tmp_path / "in" / "cut.xml", tmp_path / "in" / "whole.xml"
    cut.write_bytes(SAMPLE[: SAMPLE.rindex(b"<PubmedArticle>") + 200])  # a download that stopped short
    whole.write_bytes(SAMPLE)
    first = split(tmp_path / "in", tmp_path / "out")
    assert statuses(first) == {"cut": "done", "whole": "done"}
    assert len(doc_ids(tmp_path / "out", "cut")) == 3 and len(doc_ids(tmp_path / "out", "whole")) == 4

    cut.write_bytes(SAMPLE)  # repaired in place, same name
    with caplog.at_level(logging.WARNING, logger="bulkner"):
        second = split(tmp_path / "in", tmp_path / "out")
    assert statuses(second) == {"cut": "done", "whole": "skipped"}
    assert doc_ids(tmp_path / "out", "cut") == doc_ids(tmp_path / "out", "whole")
    assert pq.read_table(tmp_path / "out" / "rejects" / "cut.parquet").num_rows == 0
    assert second.as_dict()["redone_changed"] == 1
    assert [r.levelname for r in caplog.records if "cut" in r.getMessage() and "changed" in r.getMessage()] == ["WARNING"]

    third = split(tmp_path / "in", tmp_path / "out")
    assert statuses(third) == {"cut": "skipped", "whole": "skipped"} and third.as_dict()["redone_changed"] == 0


def test_a_touched_or_copied_input_is_not_redone(tmp_path):
    (tmp_path / "in").mkdir()
    shard = tmp_path / "in" / "s.xml"
    shard.write_bytes(SAMPLE)
    split(tmp_path / "in", tmp_path / "out")
    os.utime(shard, (1_000_000_000, 1_000_000_000))  # another mtime, same bytes (cp without -p, touch)
    assert statuses(split(tmp_path / "in", tmp_path / "out")) == {"s": "skipped"}
    at = SAMPLE.index(b"<ArticleTitle>") + len(b"<ArticleTitle>")
    shard.write_bytes(SAMPLE[:at] + b"X" + SAMPLE[at + 1 :])  # same size, other bytes
    again = split(tmp_path / "in", tmp_path / "out")
    assert statuses(again) == {"s": "done"} and again.shards[0].changed == "same size, other content"
    titles = pq.read_table(tmp_path / "out" / "documents" / "s.parquet").column("text").to_pylist()
    assert any(t.startswith("X") for t in titles)

CRASH = """
import os, sys
import pyarrow.fs as pafs
from bulkner.outputs import writer
from bulkner.config import RunConfig
from bulkner.pipeline.results import RunSummary
from bulkner.runner import local

class Dying(pafs.LocalFileSystem):
    def move(self, source, destination):  # the process dies between writing a temp file and its rename
        os._exit(9)

writer.filesystem = lambda url: (Dying(), url)
local.run([sys.argv[1]], RunConfig(out=sys.argv[2]), with_model=False, progress=False)
"""


def test_temp_files_of_a_crashed_run_are_removed_by_the_next(tmp_path):
    out = tmp_path / "out"
    crashed = subprocess.run([sys.executable, "-c", CRASH, sample_input(), str(out)], capture_output=True, text=True, check=False)
    assert crashed.returncode == 9, crashed.stderr
    orphans = [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert {p.name.split(".tmp-")[0] for p in orphans} == {".sample-pubmed.parquet"}  # every table, streamed
    assert sorted(p.parent.name for p in orphans) == ["documents", "rejects", "sentences", "tombstones"]
    assert not (out / "_done" / "sample-pubmed.json").exists()
    summary = split(Path(sample_input()), out)
    assert statuses(summary) == {"sample-pubmed": "done"}
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
