"""What the staged shard buys when generation does not use the host's CPU, as on a GPU; prints JSON.

    .venv/bin/python bench/stages.py [INPUT...] [--citations 3000] [--ms-per-sentence 2.58] [--selector]

On this project's CPU machine vLLM generates on the same two cores the CPU stages need, so the
stages cannot overlap there (``bench/ray_pipeline.py``). On a GPU they can. This bench measures
that case on the CPU: the real reader, segmenter, prompt builder (tokenizer), parser, selector
(with ``--selector``) and Parquet writer, and in place of the engine one that waits
``--ms-per-sentence`` per sentence without using the CPU, as a GPU-bound engine does (default:
2.58 ms, the 388 sentences/s measured for the SmolLM2-135M tagger on an H100, DESIGN.md). Each
design processes the same shards with the local runner's ``ShardWorker``: ``--queue-batches 0``
(stages one after another) and the default (three threads joined by bounded queues).
Default input: one shard of ``--citations`` citations, the shared data's PubMed samples over and
over under fresh PMIDs (a baseline file holds ~30,000; the stages overlap within a shard, so a
shard of a few hundred sentences, one engine batch, has nothing to overlap).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from bulkner.config import DEFAULT_TYPES, RunConfig, model_and_adapter
from bulkner.selectors import choose_selector
from bulkner.engines.base import Generation
from bulkner.pipeline.shard import ShardWorker
from bulkner.outputs.writer import OutputDir



def big_shard(folder: str, citations: int, name: str = "bench.xml.gz") -> str:
    """One PubMed file of ``citations`` real citations, repeated under fresh PMIDs (``bench/memory.py``)."""
    from memory import build_shard, real_citations  # bench/memory.py, beside this file

    path = Path(folder) / name
    build_shard(path, real_citations(), citations)
    return str(path)


class RecordingBuilder:
    """The real prompt builder, keeping each sentence's text by key for the engine below."""

    def __init__(self, builder) -> None:
        self.builder, self.types, self.max_model_len, self.texts = builder, builder.types, builder.max_model_len, {}
        self.answer = builder.answer

    def build(self, sentence, window=None):
        self.texts[sentence.key] = sentence.text
        return self.builder.build(sentence, window)


class DeviceLikeEngine:
    """Answers each prompt with its sentence's first word tagged as a Chemical, after waiting
    ``seconds_per_prompt`` per prompt in a sleep (the GIL and the cores are free meanwhile)."""

    name = "device-like"

    def __init__(self, texts: dict, seconds_per_prompt: float) -> None:
        self.texts, self.seconds = texts, seconds_per_prompt

    def generate(self, prompts):
        time.sleep(self.seconds * len(prompts))
        answers = []
        for p in prompts:
            first, _, rest = self.texts.pop(p.id).partition(" ")
            answers.append(Generation(p.id, f"Chemical:  [{first}] {rest}".rstrip(), len(p.token_ids), len(rest) // 4 + 3))
        return answers

    def close(self) -> None:
        pass


def measure(urls: list[str], queue_batches: int, seconds_per_prompt: float, selector: bool) -> dict:
    from transformers import AutoTokenizer

    from bulkner.checkpoints import resolve_model
    from bulkner.pipeline.tagger import Tagger
    from bulkner.pipeline.prompt import PromptBuilder

    model, _ = model_and_adapter(None, None)
    with tempfile.TemporaryDirectory() as out:
        config = RunConfig(out=out, queue_batches=queue_batches,
                           selector=choose_selector(None, selector, True, DEFAULT_TYPES))
        worker = ShardWorker(config)
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
        scorer = None
        if config.selector:
            from bulkner.selectors import open_selector

            scorer = open_selector(config.selector)
            scorer.setup()
        builder = RecordingBuilder(PromptBuilder(worker.types, tokenizer, config.engine.max_model_len))
        engine = DeviceLikeEngine(builder.texts, seconds_per_prompt)
        worker.tagger = Tagger(engine, builder, config.batch_sentences, scorer)
        target = OutputDir(out)
        target.claim(worker.fingerprint)
        started = time.perf_counter()
        results = [worker.process(url, target) for url in urls]
        seconds = time.perf_counter() - started
    sentences = sum(r.stats["sentences"] for r in results)
    generate = sum(r.stats["generate_seconds"] for r in results)
    entities = sum(sum(r.stats["entities_by_type"].values()) for r in results)
    return {"queue_batches": queue_batches, "sentences": sentences, "entities": entities, "seconds": round(seconds, 2),
            "generate_seconds": round(generate, 2), "engine_busy_share": round(generate / seconds, 3),
            "sentences_per_second": round(sentences / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*")
    parser.add_argument("--citations", type=int, default=3000)
    parser.add_argument("--ms-per-sentence", type=float, default=2.58)
    parser.add_argument("--selector", action="store_true", help="run the default selector in the CPU stage")
    args = parser.parse_args()
    seconds = args.ms_per_sentence / 1000
    with tempfile.TemporaryDirectory() as folder:
        urls = args.inputs or [big_shard(folder, args.citations)]
        warm_up = urls[:1] if args.inputs else [big_shard(folder, 100, "warm-up.xml.gz")]
        measure(warm_up, 0, seconds, args.selector)  # tokenizer, selector, file caches
        sequential = measure(urls, 0, seconds, args.selector)
        staged = measure(urls, RunConfig.queue_batches, seconds, args.selector)
    print(json.dumps({
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "inputs": [Path(u).name for u in urls], "ms_per_sentence": args.ms_per_sentence, "selector": args.selector,
        "one_after_another": sequential, "staged": staged,
        "ratio": round(staged["sentences_per_second"] / sequential["sentences_per_second"], 3),
    }, indent=2))


if __name__ == "__main__":
    main()
