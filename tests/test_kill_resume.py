"""Crash safety of ``bulkner run``: 20 SIGKILLs at random moments, each followed by a rerun into the
same output directory, end with exactly the tables of a clean run.

The run is the real CLI (local runner, transformers engine, the tiny random model, greedy) in a
subprocess over 24 small shards cut from the embedded sample and from ``../shared/data/pubmed``
(short citations, a deletion list, a repeated citation, a truncated one). Half the kills fall at a
seeded random time of start-up or of the first shards' work, half right after the run adds its
first file to the output directory (the fingerprint, a temporary table, a rename, a marker) plus a
random few milliseconds: in the middle of a shard's writes, where a crash is most likely to leave
half a shard. After every kill the finished shards must read back exactly as in the clean run; at
the end every shard has its marker and every table, and no temporary file is left.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bulkner
from bulkner.cli import sample_input
from bulkner.schema import TABLES
from bulkner.outputs.writer import DONE, FINGERPRINT, TEMP

SHARED_PUBMED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pubmed"
KILLS = 20
SEED = 20251201
RECORD = re.compile(rb"<PubmedArticle>.*?</PubmedArticle>", re.DOTALL)
PMID = re.compile(rb"(<MedlineCitation\b[^>]*>\s*<PMID\b[^>]*>)[0-9]+(</PMID>)")


def cli() -> list[str]:
    script = Path(sys.executable).with_name("bulkner")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from bulkner.cli import app; app()"]


def pubmed_file(path: Path, records: list[bytes]) -> None:
    head = b'<?xml version="1.0" encoding="UTF-8"?>\n<PubmedArticleSet>\n'
    path.write_bytes(gzip.compress(head + b"\n".join(records) + b"\n</PubmedArticleSet>\n"))


def make_shards(folder: Path) -> list[str]:
    """24 small PubMed shards, more than 20 kills can finish: the sample's four citations one per
    shard; short citations (title only) one per shard; one shard with a deletion list and one with a
    repeated citation and a truncated one. The short citations come from the shared data, or are
    the sample's title-only citation under other PMIDs where it is missing."""
    folder.mkdir()
    sample = RECORD.findall(gzip.decompress(Path(sample_input()).read_bytes()))
    assert len(sample) == 4
    for i, record in enumerate(sample, 1):
        pubmed_file(folder / f"s{i:02d}.xml.gz", [record])
    names = ("pubmed24n1220", "pubmed23n1167", "pubmed22n1115")
    updates = [SHARED_PUBMED / "pmparser" / "updatefiles" / f"{name}.xml.gz" for name in names]
    short = [r for p in updates if p.exists() for r in RECORD.findall(gzip.decompress(p.read_bytes()))
             if b"<Abstract>" not in r]
    title_only = next(r for r in sample if b"<Abstract>" not in r)
    short += [PMID.sub(rb"\g<1>%d\g<2>" % (90_000_000 + i), title_only, count=1) for i in range(23 - len(short))]
    deletion = b'<DeleteCitation><PMID Version="1">11029290</PMID><PMID Version="1">99999999</PMID></DeleteCitation>'
    pubmed_file(folder / "s05.xml.gz", short[:2] + [deletion])
    pubmed_file(folder / "s06.xml.gz", [short[2], short[3], short[2], short[4][: len(short[4]) // 2]])
    for i, record in enumerate(short[5:23], 7):
        pubmed_file(folder / f"s{i:02d}.xml.gz", [record])
    return sorted(str(p) for p in folder.iterdir())


def run_args(shards: list[str], out: Path, model: Path) -> list[str]:
    return [*cli(), "run", *shards, "--out", str(out), "--model", str(model), "--types", "Chemical,Disease", "--engine", "transformers",
            "--max-model-len", "1024"]


def child_env() -> dict[str, str]:
    """The test's environment (its ``BULKNER_CACHE``) with one torch thread: the same arithmetic in
    every run, and no spinning thread pool fighting other jobs for 2 cores (with 2 threads beside
    a busy process the tiny model ran 25x slower)."""
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


def launch(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as sink:
        return subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env())


def entries(out: Path) -> set[str]:
    """Every file and folder name under ``out`` (two levels: the layout's depth)."""
    if not out.is_dir():
        return set()
    found = set()
    for top in os.scandir(out):
        found.add(top.name)
        if top.is_dir():
            found.update(f"{top.name}/{e.name}" for e in os.scandir(top.path))
    return found


def clean_run(args: list[str], out: Path, log: Path) -> tuple[int, float, float, float]:
    """Run to the end; the exit code, the seconds it took, the start-up (seconds before the first
    shard's work began) and the mean seconds of a shard."""
    started = time.monotonic()
    proc, first = launch(args, log), None
    while proc.poll() is None:
        if first is None and any(e.startswith(f"{DONE}/") and e.endswith(".json") for e in entries(out)):
            first = time.monotonic() - started
        time.sleep(0.02)
    total = time.monotonic() - started
    stats = [json.loads(p.read_text()) for p in sorted((out / DONE).glob("*.json"))]
    startup = (first or total) - stats[0]["seconds"]
    return proc.returncode, total, startup, sum(s["seconds"] for s in stats) / len(stats)


def tables(out: Path) -> dict[str, list[dict]]:
    """Every table of the finished shards, rows sorted (the row order of a table is not part of it)."""
    if not (out / FINGERPRINT).exists():
        return {name: [] for name in TABLES}
    return {name: sorted(bulkner.read_table(str(out), name).to_pylist(), key=lambda r: json.dumps(r, sort_keys=True))
            for name in TABLES}


def finished_part(clean: dict[str, list[dict]], shards: set[str]) -> dict[str, list[dict]]:
    """The clean run's rows of ``shards`` (sentences by their document's shard)."""
    home = {(r["doc_id"], r["doc_version"]): r["source"] for r in clean["documents"]}
    part = {name: [r for r in rows if r.get("source") in shards] for name, rows in clean.items() if name != "sentences"}
    part["sentences"] = [r for r in clean["sentences"] if home[(r["doc_id"], r["doc_version"])] in shards]
    return part


def markers(out: Path) -> set[str]:
    return {p.stem for p in (out / DONE).glob("*.json")} if (out / DONE).is_dir() else set()


def kill_point(proc: subprocess.Popen, out: Path, rng: random.Random, timed: bool, startup: float, per_shard: float) -> bool:
    """Wait for this kill's moment and SIGKILL the run; False when it ended before that.

    A timed kill falls at a random time of start-up or of the first shards' work; the other right
    after the first file the run adds to the output directory (the fingerprint, a temporary table,
    a table renamed into place, a marker), often in the middle of a shard's writes. Either falls
    at the latest right after a new marker appears, so a killed run finishes at most one shard.
    """
    deadline = time.monotonic() + (rng.uniform(0, startup + 6 * per_shard) if timed else float("inf"))
    seen = entries(out)
    while proc.poll() is None and time.monotonic() < deadline:
        now = entries(out)
        if now - seen and (not timed or any(e.startswith(f"{DONE}/") and "/." not in e for e in now - seen)):
            break
        seen = now
        time.sleep(0.001)
    if not timed:
        time.sleep(rng.uniform(0, 0.01))  # somewhere in the shard's writes (a few ms), or just after
    if proc.poll() is not None:
        return False
    proc.kill()  # SIGKILL
    proc.wait()
    return True


@pytest.mark.slow
def test_twenty_sigkills_then_resume_equal_a_clean_run(tmp_path, tiny_model_dir):
    started = time.monotonic()
    shards = make_shards(tmp_path / "in")
    names = {Path(s).name.removesuffix(".xml.gz") for s in shards}
    log = tmp_path / "runs.log"

    rc, seconds, startup, per_shard = clean_run(run_args(shards, tmp_path / "clean", tiny_model_dir), tmp_path / "clean", log)
    assert rc in (0, 3), log.read_text()[-3000:]
    clean = tables(tmp_path / "clean")
    again_rc, *_ = clean_run(run_args(shards, tmp_path / "clean2", tiny_model_dir), tmp_path / "clean2", log)
    assert again_rc == rc and tables(tmp_path / "clean2") == clean, "two clean runs differ: decoding is not deterministic"
    assert markers(tmp_path / "clean") == names and clean["documents"] and clean["rejects"]

    out, rng, kills, runs, progress = tmp_path / "out", random.Random(SEED), 0, 0, []
    args = run_args(shards, out, tiny_model_dir)
    while kills < KILLS:
        runs += 1
        assert runs <= 2 * KILLS, f"only {kills} of {KILLS} kills landed before the run finished"
        proc = launch(args, log)
        kills += kill_point(proc, out, rng, kills % 2 == 0, startup, per_shard)
        if (out / FINGERPRINT).exists():
            json.loads((out / FINGERPRINT).read_text())  # never a half-written fingerprint
        done = markers(out)
        progress.append(len(done))
        assert tables(out) == finished_part(clean, done), f"after kill {kills}: finished shards {sorted(done)} differ"
        if done == names:
            break  # nothing left to interrupt
    assert kills == KILLS, f"the run finished after {kills} kills; make the shards bigger"

    final = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=child_env(), check=False)
    assert final.returncode == rc, final.stdout + final.stderr
    assert markers(out) == names
    assert tables(out) == clean
    for table in TABLES:  # every shard has every table, no partial or temporary file is left
        assert {p.name for p in (out / table).iterdir()} == {f"{n}.parquet" for n in names}, table
    leftovers = [p for p in out.rglob("*") if TEMP in p.name]
    assert not leftovers, leftovers
    print(f"\n{kills} kills in {runs} runs, shards done after each: {progress} of {len(names)}; clean run "
          f"{seconds:.1f} s (start-up {startup:.1f} s, {per_shard:.2f} s a shard); test {time.monotonic() - started:.0f} s")


def test_a_fingerprint_temp_file_left_by_a_kill_is_removed_by_the_next_run(tmp_path):
    """A kill between ``_create``'s write of the temporary fingerprint and its removal leaves the
    temporary file; the next run must remove it as it does the temporary files of shards."""
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f"._fingerprint.json{TEMP}0123456789abcdef0123456789abcdef"
    stale.write_text("{}")
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))  # long finished: no claim is still writing it
    result = subprocess.run([*cli(), "split", sample_input(), "--out", str(out)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert not [p for p in out.rglob("*") if TEMP in p.name]
