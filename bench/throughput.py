"""End-to-end throughput of `bulkner run` on real PubMed XML, one JSON line per setup.

    .venv/bin/python bench/throughput.py [INPUT...] [--setup NAME:ADAPTER:SELECTOR:TYPES[:FLAG...] ...]
        [--model smollm2-135m] [--engine vllm]

Every setup runs `bulkner run` over the same input in this one process, after one warm-up run of
the first setup over that input (library loading, the knowledge base and the kernels each new batch
shape needs are not charged to the first setup: on the embedded sample alone, the first setup ran
up to a fifth slower than the same setup after it).
In a setup, ADAPTER and SELECTOR are a directory, ``default`` (the shipped one) or ``none``;
TYPES is a comma-separated list; then the flags: ``constrain`` turns on constrained decoding,
``uncertain``, ``window`` or ``auto`` choose ``--generate`` (without one: ``all``), ``ngramK``
n-gram speculation with K tokens (``--speculative-ngram K``), ``queueN`` N engine batches
queued between a shard's stages (``--queue-batches N``; without it, the default). Without ``--setup`` the shipped
default runs alone, as ``bulkner run`` runs it (``--generate auto``). Default
input: ``pubmedsample18n0001.xml.gz`` from ``../shared/data/pubmed`` when it is there, else the
embedded sample.

Like ``bulkner run``, the bench restarts on tcmalloc where the system has it (``BULKNER_ALLOCATOR=system``
keeps glibc's malloc; each line's ``machine.allocator`` says which ran).

Each line: sentences/s of the shard (engine start-up excluded, reported apart), output tokens per
sentence and per sentence token (the sentence's own tokens, from the sentences table and the
model's tokenizer), sentences generated and decided by the classifier alone, entities per type and
origin, generation and selector seconds, and the held-out F1 the selector's cascade band was
calibrated for.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")  # vLLM logs to stdout otherwise: keep stdout pure JSON

from bulkner.checkpoints import default_adapter, default_selector, resolve_model  # noqa: E402
from bulkner.cli import sample_input  # noqa: E402
from bulkner.config import DEFAULT_TYPES, EngineConfig, RunConfig  # noqa: E402
from bulkner.hardware import with_fast_allocator  # noqa: E402
from bulkner.outputs.tables import read_table  # noqa: E402
from bulkner.runner.local import run  # noqa: E402

GENERATE_FLAGS = ("uncertain", "window", "auto")
HELD_INPUT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pubmed" / "pubmedsample18n0001.xml.gz"


def shipped_or(value: str, shipped) -> str | None:
    """A setup field: ``default`` is the shipped directory, ``none`` none, anything else a path."""
    return shipped() if value == "default" else None if value == "none" else value


def setup(spec: str) -> dict:
    """``NAME:ADAPTER:SELECTOR:TYPES[:constrain][:uncertain|window|auto][:ngramK][:queueN]`` as a dict; ``default`` and ``none`` resolved."""
    fields = spec.split(":")
    flags = fields[4:]
    ngram = [f for f in flags if f.startswith("ngram") and f[5:].isdigit()]
    queue = [f for f in flags if f.startswith("queue") and f[5:].isdigit()]
    modes = [f for f in flags if f in GENERATE_FLAGS]
    if (len(fields) < 4 or not set(flags) - set(ngram) - set(queue) <= {"constrain", *GENERATE_FLAGS} or len(set(flags)) != len(flags)
            or len(ngram) > 1 or len(modes) > 1 or len(queue) > 1):
        raise SystemExit(f"--setup {spec!r}: expected NAME:ADAPTER:SELECTOR:TYPES[:constrain][:uncertain|window|auto][:ngramK][:queueN]")
    name, adapter, selector, types = fields[:4]
    return {
        "name": name,
        "adapter": shipped_or(adapter, default_adapter),
        "selector": shipped_or(selector, default_selector),
        "types": tuple(t for t in types.split(",") if t),
        "constrain": "constrain" in flags,
        "generate": modes[0] if modes else "all",
        "speculative_ngram": int(ngram[0][5:]) if ngram else 0,
        "queue_batches": int(queue[0][5:]) if queue else None,
    }


def band_calibration(selector: str) -> dict:
    """The selector's cascade calibration: its band, and held-out F1 with it and generating all."""
    from bulkner.selectors import read_meta

    cascade = read_meta(selector)["calibration"]["cascade"]
    return {k: cascade[k] for k in ("low", "high", "f1", "f1_all", "generated_share")}


def run_setup(inputs: list[str], chosen: dict, args: argparse.Namespace) -> dict:
    engine = EngineConfig(name=args.engine, model=args.model, adapter=chosen["adapter"], constrain=chosen["constrain"],
                          speculative_ngram=chosen["speculative_ngram"])
    with tempfile.TemporaryDirectory() as out:
        queue = {} if chosen["queue_batches"] is None else {"queue_batches": chosen["queue_batches"]}
        config = RunConfig(out=out, types=chosen["types"], engine=engine, selector=chosen["selector"], generate=chosen["generate"], **queue)
        started = time.perf_counter()
        summary = run(inputs, config, progress=False).as_dict()
        total = time.perf_counter() - started
        texts = read_table(out, "sentences", columns=["text"]).column("text").to_pylist()
        entities = read_table(out, "entities", columns=["type", "origin"]).to_pylist()
    sentence_tokens = sum(len(ids) for ids in args.tokenizer(texts, add_special_tokens=False)["input_ids"])
    sentences = summary["sentences"]
    return {
        "setup": chosen["name"], "types": list(chosen["types"]), "constrained": chosen["constrain"], "generate": chosen["generate"],
        "speculative_ngram": chosen["speculative_ngram"], "queue_batches": chosen["queue_batches"],
        "adapter": chosen["adapter"], "selector": chosen["selector"],
        "documents": summary["documents"], "sentences": sentences,
        "sentences_per_second": summary["sentences_per_second"],
        "generated": summary["generated"], "classified": summary["classified"],
        "shard_seconds": summary["seconds"], "start_up_seconds": round(total - summary["seconds"], 2),
        "generate_seconds": summary["generate_seconds"], "selector_seconds": summary["selector_seconds"],
        "output_tokens_per_sentence": round(summary["output_tokens"] / sentences, 2) if sentences else None,
        "output_per_sentence_token": round(summary["output_tokens"] / sentence_tokens, 3) if sentence_tokens else None,
        "entities_by_type": summary["entities_by_type"],
        "entities_by_origin": dict(sorted(Counter(e["origin"] for e in entities).items())),
        "abbreviations": summary["abbreviations"],
        "calibrated_for": band_calibration(chosen["selector"]) if summary["classified"] else None,
        "rejects_by_reason": summary["rejects_by_reason"],
    }


def main() -> None:
    with_fast_allocator()  # as `bulkner run` does
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*")
    parser.add_argument("--setup", action="append", default=[], help="NAME:ADAPTER:SELECTOR:TYPES[:FLAG...] (repeat)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--engine", default="vllm")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    args.tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model))
    setups = [setup(s) for s in args.setup] or [setup(f"default:default:default:{','.join(DEFAULT_TYPES)}:auto")]
    inputs = args.inputs or [str(HELD_INPUT) if HELD_INPUT.is_file() else sample_input()]
    machine = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
               "allocator": os.environ.get("LD_PRELOAD") or "system"}
    run_setup(inputs, setups[0], args)  # warm-up
    for chosen in setups:
        print(json.dumps({"machine": machine, "engine": args.engine, "model": args.model, "inputs": inputs}
                         | run_setup(inputs, chosen, args)), flush=True)


if __name__ == "__main__":
    main()
