"""Sentences/s of three designs of the Ray runner on the same input, on local Ray; prints JSON.

    .venv/bin/python bench/ray_pipeline.py [INPUT...] [--designs pool,staged,ray-data] [--engine vllm]

Designs, each in a fresh local Ray over the same shards, with the default tagger and selector:

- ``pool``: the replica pool as it was: each replica reads, segments, builds prompts, generates,
  parses, selects and writes a shard one step after another (``--queue-batches 0``).
- ``staged``: the same pool, each replica running a shard's stages in three threads joined by
  bounded queues (``bulkner.pipeline.stages``; the default, ``--queue-batches 2``).
- ``ray-data``: Ray Data: read/segment/prompt, generate and parse/select as three actor stages
  (``Dataset.map`` with a class, one actor each; the engine's with the replica's CPUs, the others
  with half a CPU) that Ray Data streams batches through, entities written as Parquet; it keeps
  no completion markers and requeues nothing (less work than the runner does).

``sentences_per_second`` is sentences over the design's wall time, engine start included (one
engine in each design); ``ratio_to_pool`` compares it with ``pool``. Ray Data needs pandas:
``pip install 'ray[data]'``. Default input: the six PubMed baseline samples of the shared data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from bulkner.config import DEFAULT_TYPES, EngineConfig, RayConfig, RunConfig, model_and_adapter  # noqa: E402
from bulkner.selectors import choose_selector  # noqa: E402

BASELINE = Path(__file__).resolve().parents[2] / "shared" / "data" / "pubmed" / "pmparser" / "baseline"
DESIGNS = ("pool", "staged", "ray-data")


def run_config(out: str, engine: str, queue_batches: int) -> RunConfig:
    model, adapter = model_and_adapter(None, None)
    return RunConfig(out=out, engine=EngineConfig(name=engine, model=model, adapter=adapter),
                     selector=choose_selector(None, True, True, DEFAULT_TYPES), queue_batches=queue_batches)


def runner_design(urls: list[str], config: RunConfig) -> dict:
    """The Ray runner (``bulkner run --runner ray``) with default options."""
    from bulkner.runner.ray import run

    summary = run(urls, config, ray_config=RayConfig(), progress=False).as_dict()
    return {"sentences": summary["sentences"], "entities": sum(summary["entities_by_type"].values()),
            "shards_done": summary["shards"]["done"], "generate_seconds": summary["generate_seconds"],
            "shard_seconds": summary["seconds"]}


def cpu_tagger(config: RunConfig, selector=None):
    """A ``Tagger`` without an engine, for the CPU steps (``prepare``, ``finish``)."""
    from transformers import AutoTokenizer

    from bulkner.checkpoints import resolve_model
    from bulkner.pipeline.tagger import Tagger
    from bulkner.pipeline.prompt import PromptBuilder
    from bulkner.types import resolve_types

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(config.engine.model))
    builder = PromptBuilder(resolve_types(config.types), tokenizer, config.engine.max_model_len)
    return Tagger(None, builder, config.batch_sentences, selector)


class Prepare:
    """Ray Data stage 1: a shard's records → engine batches with prompts (``Tagger.prepare``)."""

    def __init__(self, config: RunConfig) -> None:
        self.tagger, self.config = cpu_tagger(config), config

    def __call__(self, row: dict) -> list[dict]:
        from bulkner.pipeline.tagger import batched
        from bulkner.connectors.discover import LatestRecords
        from bulkner.pipeline.shard import CHUNK_RECORDS, RecordChunk

        out = []
        for records in batched(LatestRecords(row["item"], self.config.input), CHUNK_RECORDS):
            chunk = RecordChunk(records, self.config.max_sentence_chars)
            out += [{"batch": batch} for batch in self.tagger.batches(chunk.sentences)]
        return out


class Generate:
    """Ray Data stage 2: the engine (one replica)."""

    def __init__(self, config: RunConfig) -> None:
        from bulkner.pipeline.tagger import TagStats, build_tagger
        from bulkner.types import resolve_types

        self.tagger = build_tagger(resolve_types(config.types), config.engine, config.batch_sentences)
        self.stats = TagStats()

    def __call__(self, row: dict) -> dict:
        return {"batch": self.tagger.generate(row["batch"], self.stats)}


class Finish:
    """Ray Data stage 3: parse, select, write the batch's entities as one Parquet file."""

    def __init__(self, config: RunConfig, out: str) -> None:
        from bulkner.pipeline.tagger import TagStats
        from bulkner.selectors import open_selector

        selector = open_selector(config.selector, config.selector_threshold)
        selector.setup()
        self.tagger, self.stats, self.out, self.count = cpu_tagger(config, selector), TagStats(), out, 0

    def __call__(self, row: dict) -> dict:
        import pyarrow.parquet as pq

        from bulkner.outputs.writer import entities_table

        batch = self.tagger.finish(row["batch"], self.stats)
        self.count += 1
        pq.write_table(entities_table(batch.entities, "ray-data"), f"{self.out}/{os.getpid()}-{self.count}.parquet")
        return {"sentences": batch.size, "entities": len(batch.entities)}


def ray_data_design(urls: list[str], config: RunConfig) -> dict:
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    threads = {"env_vars": {"OMP_NUM_THREADS": str(cpus)}}  # the engine on every core, as the runner's CPU replica
    ds = ray.data.from_items(urls)
    ds = ds.flat_map(Prepare, fn_constructor_args=(config,), concurrency=1, num_cpus=0.5)
    ds = ds.map(Generate, fn_constructor_args=(config,), concurrency=1, num_cpus=1, runtime_env=threads)
    ds = ds.map(Finish, fn_constructor_args=(config, config.out), concurrency=1, num_cpus=0.5)
    rows = ds.take_all()
    return {"sentences": sum(r["sentences"] for r in rows), "entities": sum(r["entities"] for r in rows)}


def measure(design: str, urls: list[str], engine: str) -> dict:
    import ray

    with tempfile.TemporaryDirectory() as out:
        config = run_config(out, engine, 0 if design == "pool" else RunConfig.queue_batches)
        ray.init(include_dashboard=False, log_to_driver=False)
        started = time.perf_counter()
        try:
            result = ray_data_design(urls, config) if design == "ray-data" else runner_design(urls, config)
        finally:
            seconds = time.perf_counter() - started
            ray.shutdown()
    return {"design": design, **result, "seconds": round(seconds, 2),
            "sentences_per_second": round(result["sentences"] / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*")
    parser.add_argument("--designs", default=",".join(DESIGNS))
    parser.add_argument("--engine", default="vllm")
    args = parser.parse_args()
    designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    unknown = set(designs) - set(DESIGNS)
    if unknown:
        parser.error(f"unknown designs {sorted(unknown)}; choose from {', '.join(DESIGNS)}")
    if "ray-data" in designs:
        try:
            import ray.data  # noqa: F401
        except ImportError as err:
            parser.error(f"the ray-data design needs Ray Data: pip install 'ray[data]' ({err})")
    urls = args.inputs or sorted(str(p) for p in BASELINE.glob("*.xml.gz"))
    if not urls:
        parser.error(f"no input given and no PubMed samples in {BASELINE}")
    results = [measure(design, urls, args.engine) for design in designs]
    pool = next((r for r in results if r["design"] == "pool"), None)
    for r in results:
        if pool is not None:
            r["ratio_to_pool"] = round(r["sentences_per_second"] / pool["sentences_per_second"], 3)
    print(json.dumps({
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "inputs": [Path(u).name for u in urls], "engine": args.engine, "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
