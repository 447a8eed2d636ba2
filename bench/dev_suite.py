"""The development suite of the six-type tagger: ``bulkner eval`` on every held-out development set;
one JSON line per corpus.

    .venv/bin/python bench/dev_suite.py [--adapter DIR] [--selector DIR | --no-selector] [--only biored,bc5cdr]
        [--out DIR]   # also keep each eval's --json and --predictions files there

Corpora (all documents unless a limit is given): BioRED dev (six types), BC5CDR dev (Chemical,
Disease), NCBI-disease dev (Disease), BC2GM dev (Gene; the first 1,000 sentences), S800 devel
(Species; its Out-of-scope label is not scored), tmVar3 held out (every fifth document,
``scripts/split_pubtator.py``; Gene, Species, Variant, CellLine). Each line gives strict and
relaxed micro P/R/F1, strict F1 per type, sentences, the generator's seconds, output tokens per
sentence and sentences per second of generation, and the wall time of the eval (engine start
included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NER = ROOT.parent / "shared" / "data" / "ner"
TMVAR_DEV = ROOT / "runs" / "data" / "tmvar3-dev.PubTator"
SIX = "Gene,Chemical,Disease,Species,Variant,CellLine"
CORPORA = {
    "biored": (NER / "biored" / "Dev.filtered.PubTator", "pubtator", SIX, None),
    "bc5cdr": (NER / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt", "pubtator", "Chemical,Disease", None),
    "ncbi": (NER / "ncbi_disease" / "NCBIdevelopset_corpus.txt", "pubtator", "Disease", None),
    "bc2gm": (NER / "bc2gm" / "conll" / "devel.tsv", "conll", "Gene", 1000),
    "s800": (NER / "s800" / "devel", "brat", "Species", None),
    "tmvar3": (TMVAR_DEV, "pubtator", "Gene,Species,Variant,CellLine", None),
}
"""name → (gold path, format, types scored, document limit)."""


def summary(name: str, result: dict, wall: float) -> dict:
    """The line printed for one corpus."""
    pipeline = result["pipeline"]
    sentences = pipeline["sentences"]
    seconds = pipeline.get("generate_seconds") or 0.0
    return {
        "corpus": name, "documents": result["documents"], "types": result["types"],
        "strict": {k: round(100 * result["strict"]["micro"][k], 2) for k in ("precision", "recall", "f1")},
        "relaxed": {k: round(100 * result["relaxed"]["micro"][k], 2) for k in ("precision", "recall", "f1")},
        "strict_f1_by_type": {t: round(100 * result["strict"]["per_type"][t]["f1"], 2) for t in result["types"]},
        "sentences": sentences, "generate_seconds": round(seconds, 1),
        "output_tokens_per_sentence": round(pipeline.get("output_tokens", 0) / max(1, sentences), 2),
        "sentences_per_second": round(sentences / seconds, 2) if seconds else None,
        "rejects": pipeline["rejects"], "wall_seconds": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", help="adapter directory (default: the shipped tagger)")
    parser.add_argument("--selector", help="selector directory (default: the shipped one, for the shipped tagger)")
    parser.add_argument("--no-selector", action="store_true")
    parser.add_argument("--only", help="comma-separated corpora of " + ", ".join(CORPORA))
    parser.add_argument("--out", type=Path, help="keep each eval's JSON and predictions here")
    args = parser.parse_args()
    bulkner = Path(sys.executable).with_name("bulkner")
    cli = [str(bulkner)] if bulkner.exists() else [sys.executable, "-c", "from bulkner.cli import app; app()"]
    out = args.out or Path(ROOT / "runs" / "dev_suite")
    out.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(",") if args.only else CORPORA:
        gold, fmt, types, limit = CORPORA[name]
        if not gold.exists():
            print(json.dumps({"corpus": name, "skipped": f"{gold} missing"}), flush=True)
            continue
        scores = out / f"{name}.json"
        command = [*cli, "eval", "--gold", str(gold), "--format", fmt, "--types", types, "--json", str(scores),
                   "--predictions", str(out / f"{name}.predictions.jsonl")]
        command += ["--limit", str(limit)] if limit else []
        command += ["--adapter", args.adapter] if args.adapter else []
        command += ["--no-selector"] if args.no_selector else (["--selector", args.selector] if args.selector else [])
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(json.dumps({"corpus": name, "failed": done.returncode, "stderr": done.stderr[-2000:]}), flush=True)
            continue
        print(json.dumps(summary(name, json.loads(scores.read_text()), time.perf_counter() - started)), flush=True)


if __name__ == "__main__":
    main()
