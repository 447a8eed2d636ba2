"""The staged shard: read/segment/prompt, generate and parse/select/write in three threads joined by
bounded queues write exactly what the stages write one after another, feed the engine ahead of
time, and stop cleanly (nothing committed, no thread left) when any stage fails."""

from __future__ import annotations

import threading

import pyarrow.parquet as pq
import pytest

import bulkner
from bulkner.cli import sample_input
from bulkner.config import RunConfig
from bulkner.tagging import answer_format
from bulkner.engines.base import Generation, Prompt
from bulkner.pipeline.tagger import Tagger
from bulkner.pipeline import shard as shard_module
from bulkner.pipeline.shard import ShardWorker
from bulkner.schema import TABLES
from bulkner.pipeline.stages import Sink, prefetch
from bulkner.types import resolve_types
from bulkner.outputs.writer import OutputDir
from tests.test_kill_resume import make_shards

TYPES = resolve_types(["Chemical", "Disease"])


class EchoPrompts:
    """Prompts that carry the sentence text as code points (the engine below reads them back)."""

    def __init__(self, types, on_build=None) -> None:
        self.types, self.max_model_len, self.on_build = list(types), 0, on_build
        self.answer = answer_format("blocks")

    def build(self, sentence, window=None) -> Prompt:
        if self.on_build is not None:
            self.on_build()
        return Prompt(id=sentence.key, token_ids=tuple(map(ord, sentence.text)), max_tokens=0)


class FirstWordEngine:
    """Tags each sentence's first word as a Chemical and its last as a Disease; ``before(call,
    prompts)`` runs at the start of every ``generate`` call (calls counted from 0)."""

    name = "first-word"

    def __init__(self, before=None) -> None:
        self.before, self.calls = before, 0

    def generate(self, prompts):
        call, self.calls = self.calls, self.calls + 1
        if self.before is not None:
            self.before(call, len(prompts))
        out = []
        for p in prompts:
            words = "".join(map(chr, p.token_ids)).split(" ")
            chem = " ".join([f"[{words[0]}]", *words[1:]])
            dis = " ".join([*words[:-1], f"[{words[-1]}]"]) if len(words) > 1 else words[0]
            out.append(Generation(p.id, f"Chemical:  {chem}  \nDisease:  {dis}", len(p.token_ids), 9))
        return out[::-1]

    def close(self) -> None:
        pass


@pytest.fixture
def small_chunks(monkeypatch):
    """Two records per chunk, so that a shard has several chunks of several engine batches."""
    monkeypatch.setattr(shard_module, "CHUNK_RECORDS", 2)


def shards(tmp_path) -> list[str]:
    """The embedded sample (four citations) and a shard with a repeated and a truncated citation."""
    return [sample_input(), make_shards(tmp_path / "in")[5]]


def process(urls, out, queue_batches, engine=None, prompts=None, batch_sentences=3) -> list:
    config = RunConfig(out=str(out), queue_batches=queue_batches, batch_sentences=batch_sentences)
    worker = ShardWorker(config)
    worker.tagger = Tagger(engine or FirstWordEngine(), prompts or EchoPrompts(TYPES), config.batch_sentences)
    target = OutputDir(str(out))
    target.claim(worker.fingerprint)
    return [worker.process(url, target) for url in urls]


def in_file_order(out) -> dict[str, list[dict]]:
    """Every table's rows in the order they were written, files in name order."""
    files = sorted(p for p in out.rglob("*.parquet"))
    return {name: [r for f in files if f.parent.name == name for r in pq.read_table(f).to_pylist()] for name in TABLES}


def test_staged_and_sequential_write_the_same_rows_in_the_same_order(tmp_path, small_chunks):
    urls = shards(tmp_path)
    sequential = process(urls, tmp_path / "seq", queue_batches=0)
    staged = process(urls, tmp_path / "staged", queue_batches=2)
    assert [r.status for r in sequential] == [r.status for r in staged] == ["done", "done"]
    drop = ("seconds", "sentences_per_second", "generate_seconds", "selector_seconds")
    assert [{k: v for k, v in r.stats.items() if k not in drop} for r in sequential] == \
           [{k: v for k, v in r.stats.items() if k not in drop} for r in staged]
    rows = in_file_order(tmp_path / "staged")
    assert rows == in_file_order(tmp_path / "seq")
    assert rows["entities"] and rows["rejects"] and rows["documents"]
    assert {r["type"] for r in rows["entities"]} == {"Chemical", "Disease"}
    assert sum(r.stats["sentences"] for r in staged) == len(rows["sentences"])
    assert bulkner.read_table(str(tmp_path / "staged"), "entities").num_rows == len(rows["entities"])


@pytest.mark.parametrize("depth", [0, 2])
def test_the_engine_is_fed_while_it_generates(tmp_path, small_chunks, depth):
    """One engine batch per chunk: while the engine works on chunk 0, the first stage builds chunk
    1's prompts when the stages are queued (the engine sees one built in its first call), and
    cannot when they run one after another."""
    built = threading.Semaphore(0)
    seen: list[bool] = []

    def next_chunk_built(call: int, prompts: int) -> None:
        if call == 0:
            assert all(built.acquire(timeout=5) for _ in range(prompts))  # chunk 0's own prompts
            seen.append(built.acquire(timeout=30 if depth else 0.5))

    engine, prompts = FirstWordEngine(next_chunk_built), EchoPrompts(TYPES, built.release)
    results = process([sample_input()], tmp_path / "out", depth, engine, prompts, batch_sentences=1000)
    assert results[0].status == "done" and engine.calls > 1
    assert seen == [bool(depth)]


def stage_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.endswith((":prepare", ":write"))]


def test_an_engine_error_mid_shard_fails_it_and_stops_every_stage(tmp_path, small_chunks):
    def boom(call: int, prompts: int) -> None:
        if call == 2:
            raise RuntimeError("engine lost its device")

    results = process(shards(tmp_path), tmp_path / "out", 2, FirstWordEngine(boom))
    assert [r.status for r in results] == ["failed", "done"]  # the next shard runs on (calls 3, 4, ...)
    assert "engine lost its device" in results[0].error
    assert not stage_threads()
    written = {p.stem for p in (tmp_path / "out").rglob("*.parquet")}
    assert written and all(name.startswith(results[1].shard) for name in written), written


def test_a_write_stage_error_fails_the_shard_and_commits_nothing(tmp_path, small_chunks):
    class FailingFinish(Tagger):
        def finish(self, batch, stats):
            if stats.prompts >= 4:
                raise OSError("disk full")
            return super().finish(batch, stats)

    config = RunConfig(out=str(tmp_path / "out"), batch_sentences=3)
    worker = ShardWorker(config)
    worker.tagger = FailingFinish(FirstWordEngine(), EchoPrompts(TYPES), 3)
    out = OutputDir(config.out)
    out.claim(worker.fingerprint)
    result = worker.process(sample_input(), out)
    assert result.status == "failed" and "disk full" in result.error
    assert not stage_threads()
    assert out.done(result.shard) is None
    assert not list((tmp_path / "out").rglob("*.parquet"))


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetch_keeps_order_and_stays_within_its_depth(depth):
    produced: list[int] = []

    def numbers():
        for i in range(20):
            produced.append(i)
            yield i

    seen, ahead = [], []
    with prefetch(numbers(), depth) as items:
        for i in items:
            seen.append(i)
            ahead.append(len(produced) - len(seen))
    assert seen == list(range(20))
    assert max(ahead) <= depth + 1  # the queue, plus the item the producer holds while it waits


def test_prefetch_raises_the_producers_error_in_the_consumer():
    def items():
        yield 1
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"), prefetch(items(), 2) as source:
        list(source)


def test_prefetch_left_early_stops_its_thread():
    def endless():
        while True:
            yield 0

    with prefetch(endless(), 2, "endless") as source:
        next(iter(source))
    assert "endless" not in [t.name for t in threading.enumerate()]


@pytest.mark.parametrize("depth", [0, 2])
def test_sink_consumes_in_order_and_raises_the_first_error(depth):
    got: list[int] = []
    with Sink(got.append, depth) as sink:
        for i in range(50):
            sink.put(i)
    assert got == list(range(50))

    def fail_at_3(i: int) -> None:
        if i == 3:
            raise OSError("disk full")
        got.append(i)

    got.clear()
    with pytest.raises(OSError, match="disk full"), Sink(fail_at_3, depth) as sink:
        for i in range(1000):
            sink.put(i)
    assert got == [0, 1, 2]


def test_sink_aborted_by_the_producers_error_drops_the_rest():
    release = threading.Event()
    got: list[int] = []

    def slow(i: int) -> None:
        release.wait(5)
        got.append(i)

    with pytest.raises(KeyError), Sink(slow, 2, "slow") as sink:
        for i in range(3):
            sink.put(i)
        release.set()
        raise KeyError("generate failed")
    assert len(got) <= 3 and "slow" not in [t.name for t in threading.enumerate()]
