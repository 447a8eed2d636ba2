"""End-to-end throughput of `bulkner run` on real PubMed XML; prints JSON.

    .venv/bin/python bench/pipeline.py [INPUT...] [--model smollm2-135m] [--engine vllm] [--limit-docs N]

Default input: the embedded sample. Reports engine start-up, sentences/s and output tokens/s of
the tagging phase, and the end-to-end time, measured in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")  # vLLM logs to stdout otherwise: keep stdout pure JSON

from bulkner.cli import sample_input  # noqa: E402
from bulkner.config import EngineConfig, RunConfig  # noqa: E402
from bulkner.runner.local import run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("inputs", nargs="*")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--adapter")
    parser.add_argument("--engine", default="vllm")
    parser.add_argument("--types", default="Chemical,Disease")
    parser.add_argument("--speculative-ngram", type=int, default=0)
    args = parser.parse_args()
    engine = EngineConfig(name=args.engine, model=args.model, adapter=args.adapter, speculative_ngram=args.speculative_ngram)
    with tempfile.TemporaryDirectory() as out:
        config = RunConfig(out=out, types=tuple(args.types.split(",")), engine=engine)
        started = time.perf_counter()
        summary = run(args.inputs or [sample_input()], config, progress=False).as_dict()
        total = time.perf_counter() - started
    print(json.dumps({
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "engine": args.engine, "model": args.model, "speculative_ngram": args.speculative_ngram,
        "documents": summary["documents"], "sentences": summary["sentences"],
        "prompt_tokens": summary["prompt_tokens"], "output_tokens": summary["output_tokens"],
        "shard_seconds": summary["seconds"], "end_to_end_seconds": round(total, 2),
        "sentences_per_second": summary["sentences_per_second"],
        "output_tokens_per_second": round(summary["output_tokens"] / summary["seconds"], 1) if summary["seconds"] else None,
    }, indent=2))


if __name__ == "__main__":
    main()
