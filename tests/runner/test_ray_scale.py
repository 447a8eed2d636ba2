"""The Ray runner as a cluster job: killed replicas lose nothing, nightly updates leave the latest
version of each article, and default options on CPUs give the local runner's entities."""

from __future__ import annotations

import gzip
import os
import random
import re
import signal
import threading
import time
from pathlib import Path

import pytest

import bulkner
from bulkner.cli import sample_input
from bulkner.config import DEFAULT_TYPES, EngineConfig, RayConfig, RunConfig
from bulkner.outputs.writer import TEMP
from tests.test_kill_resume import RECORD, make_shards, pubmed_file, tables

pytest.importorskip("ray", reason="Ray is not installed (pip install 'bulkner[ray]')")
psutil = pytest.importorskip("psutil")

TRIALS = 10
SEED = 20261201
SHARDS = 12


def replica_pids() -> list[int]:
    """Process ids of the live replica actors (Ray names their processes ``ray::ShardActor...``)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if " ".join(proc.info["cmdline"] or []).startswith("ray::ShardActor"):
            found.append(proc.pid)
    return sorted(found)


def shard_in_progress(out: Path) -> bool:
    """Whether some replica is writing a shard of ``out`` now (its hidden temporary table files exist)."""
    return any(TEMP in p.name for p in out.glob("*/.*"))


@pytest.mark.slow
def test_replicas_killed_at_random_points_lose_nothing(tmp_path, ray_local, tiny_model_dir):
    """Ten runs over 12 shards with 2 replicas; in each, one replica process is SIGKILLed at a
    seeded random moment (start-up, between shards); in every other run, every replica is killed
    while a shard is being written. Every run ends with every shard done
    and tables equal to a clean run's: nothing missing, nothing twice, no temporary file left."""
    from bulkner.runner.ray import run

    shards = make_shards(tmp_path / "in")[:SHARDS]
    engine = EngineConfig(name="transformers", model=str(tiny_model_dir), max_model_len=1024)
    options = RayConfig(replicas=2, max_attempts=3, max_restarts=3)

    def job(out: Path):
        return run(shards, RunConfig(out=str(out), engine=engine), ray_config=options, progress=False)

    started = time.monotonic()
    clean = job(tmp_path / "clean")
    seconds = time.monotonic() - started
    assert clean.count("done") == SHARDS, clean.shards
    expected = tables(tmp_path / "clean")
    assert expected["documents"] and expected["rejects"]

    rng, requeued = random.Random(SEED), 0
    for trial in range(TRIALS):
        out, killed = tmp_path / f"trial{trial}", []
        # even trials: one replica at a random moment of the run (start-up included); odd ones:
        # every replica, up to 0.05 s after a shard is seen in progress (mid-shard or mid-write)
        in_shard = trial % 2 == 1
        delay = rng.uniform(0, 0.05) if in_shard else rng.uniform(0.2, 0.9 * seconds)

        def kill_one(delay=delay, killed=killed, out=out, in_shard=in_shard) -> None:
            deadline = time.monotonic() + 0.9 * seconds
            while in_shard and time.monotonic() < deadline and not shard_in_progress(out):
                time.sleep(0.002)
            time.sleep(delay)
            pids = replica_pids()
            for pid in pids if in_shard else pids[rng.randrange(len(pids)):][:1]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        killer = threading.Thread(target=kill_one)
        killer.start()
        summary = job(out)
        killer.join()
        requeued += sum(r["restarts"] for r in summary.as_dict()["replicas"]) > 0
        assert killed, f"trial {trial}: no replica was alive {delay:.1f} s in"
        assert summary.count("done") == SHARDS, f"trial {trial}: {[(r.shard, r.status, r.error) for r in summary.shards]}"
        assert tables(out) == expected, f"trial {trial} (kill after {delay:.1f} s) differs from the clean run"
        assert not [p for p in out.rglob("*") if TEMP in p.name], f"trial {trial}: temporary files left"
    assert requeued >= 3, f"only {requeued} of {TRIALS} kills hit a replica while it held a shard"


def citation(record: bytes, pmid: int, title: str | None = None) -> bytes:
    record = re.sub(rb"(<MedlineCitation\b[^>]*>\s*<PMID\b[^>]*>)[0-9]+(</PMID>)", rb"\g<1>%d\g<2>" % pmid, record, count=1)
    if title is not None:
        record = re.sub(rb"<ArticleTitle>.*?</ArticleTitle>", b"<ArticleTitle>" + title.encode() + b"</ArticleTitle>",
                        record, count=1, flags=re.DOTALL)
    return record


def deletion(*pmids: int) -> bytes:
    return b"<DeleteCitation>" + b"".join(b'<PMID Version="1">%d</PMID>' % p for p in pmids) + b"</DeleteCitation>"


def test_nightly_updates_leave_the_latest_version_and_no_deleted_article(tmp_path, ray_local):
    """A baseline file, then two update files (revisions, a deletion, a revival, a new article),
    each job a Ray run into the same output: the current tables hold each article's last version,
    no deleted article, and a resubmission skips everything."""
    from bulkner.runner.ray import run

    a, b, c, d = RECORD.findall(gzip.decompress(Path(sample_input()).read_bytes()))
    base, updates = tmp_path / "baseline", tmp_path / "updatefiles"
    base.mkdir(), updates.mkdir()
    pubmed_file(base / "pubmed26n0001.xml.gz", [citation(a, 1), citation(b, 2), citation(c, 3), citation(d, 4)])
    pubmed_file(updates / "pubmed26n0002.xml.gz", [citation(a, 1, "Revised once."), deletion(3, 4)])
    pubmed_file(updates / "pubmed26n0010.xml.gz",  # numeric order: 10 comes after 2
                [citation(a, 1, "Revised twice."), citation(c, 3, "Revived."), citation(b, 5, "New.")])
    config = RunConfig(out=str(tmp_path / "out"))
    assert run([str(base)], config, with_model=False, progress=False).count("done") == 1
    nightly = run([str(updates)], config, with_model=False, progress=False)
    assert nightly.count("done") == 2

    current = bulkner.read_table(str(tmp_path / "out"), "documents", current=True).to_pylist()
    titles = {r["doc_id"]: r["text"] for r in current if r["passage_index"] == 0}
    assert titles["pmid:1"] == "Revised twice." and titles["pmid:3"] == "Revived." and titles["pmid:5"] == "New."
    assert set(titles) == {"pmid:1", "pmid:2", "pmid:3", "pmid:5"}  # 4 deleted, 3 deleted then revived
    assert len(current) == len({(r["doc_id"], r["passage_index"]) for r in current})  # one version each
    sentences = bulkner.read_table(str(tmp_path / "out"), "sentences", current=True).to_pylist()
    assert {r["doc_id"] for r in sentences} == set(titles)
    assert [r["text"] for r in sentences if r["doc_id"] == "pmid:1" and r["passage_index"] == 0] == ["Revised twice."]
    tombstones = bulkner.read_table(str(tmp_path / "out"), "tombstones", current=True).column("doc_id").to_pylist()
    assert tombstones == ["pmid:4"]
    everything = bulkner.read_table(str(tmp_path / "out"), "documents")  # the raw table keeps every version
    assert everything.num_rows > len(current)
    again = run([str(base), str(updates)], config, with_model=False, progress=False)
    assert again.count("skipped") == 3


@pytest.mark.vllm
@pytest.mark.slow
def test_default_options_on_local_ray_give_the_local_runners_entities(tmp_path, ray_local):
    """`bulkner run --runner ray` with default options on this CPU machine (CPU replicas, the
    default tagger on vLLM) over three PubMed files: exactly the local runner's rows, entities too."""
    from bulkner.engines import engine_available
    from tests.test_cli import invoke

    ok, reason = engine_available("vllm")
    if not ok:
        pytest.skip(reason)
    records = RECORD.findall(gzip.decompress(Path(sample_input()).read_bytes()))
    (tmp_path / "in").mkdir()
    for name, part in (("p1", records[:2]), ("p2", records[2:3]), ("p3", records[3:])):
        pubmed_file(tmp_path / "in" / f"{name}.xml.gz", part)
    on_ray = invoke("run", tmp_path / "in", "--out", tmp_path / "ray", "--runner", "ray")
    assert on_ray.exit_code == 0, on_ray.output
    local = invoke("run", tmp_path / "in", "--out", tmp_path / "local")
    assert local.exit_code == 0, local.output
    ray_tables, local_tables = tables(tmp_path / "ray"), tables(tmp_path / "local")
    # the sample's only Chemical spans were abbreviations the document pass drops: any default type
    assert ray_tables["entities"] and {r["type"] for r in ray_tables["entities"]} <= set(DEFAULT_TYPES)
    for name in ("documents", "sentences", "tombstones"):
        assert ray_tables[name] == local_tables[name], name
    assert ray_tables == local_tables  # a CPU replica pins the node's CPUs: vLLM runs on as many threads as locally
