"""Zero-shot entity types: the default tagger on types it was never trained on; prints JSON.

    .venv/bin/python bench/zero_shot.py [--limit 600] [--adapter DIR] [--types-file FILE]

The default tagger was trained on Chemical and Disease only (BC5CDR, NCBI-disease). Here it is
asked, by name and definition (``bulkner/data/types/zero-shot-v1.json``), for the types of three
other shared corpora: JNLPBA development set (Gene, DNA, RNA, CellLine, CellType; one
document per sentence), BC2GM development set (Gene) and GENIA 3.02 (the same five types,
nested; one document per abstract). Each runs ``bulkner eval`` on the first ``--limit`` documents
(GENIA: a tenth of it) and reports strict (exact span and type) and relaxed (overlapping span, same
type) micro F1 and per-type F1. GLiNER-biomed's published zero-shot figures on such corpora are
about 0.52–0.60 F1 (``GLINER_BIOMED_ZERO_SHOT``); compare relaxed with care, since the matching
rules of published figures differ.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NER = ROOT.parent / "shared" / "data" / "ner"
TYPES_FILE = ROOT / "bulkner" / "data" / "types" / "zero-shot-v1.json"
FIVE = "Gene,DNA,RNA,CellLine,CellType"
CORPORA = {
    "jnlpba_devel": (NER / "jnlpba" / "conll" / "devel.tsv", "conll", FIVE, 1),
    "bc2gm_devel": (NER / "bc2gm" / "conll" / "devel.tsv", "conll", "Gene", 1),
    "genia": (NER / "genia" / "GENIAcorpus3.02.tgz", "genia-xml", FIVE, 10),
}
"""name → (gold path, format, types, divisor of --limit)."""
GLINER_BIOMED_ZERO_SHOT = "about 0.52-0.60 F1 (GLiNER-biomed paper, zero-shot on biomedical NER benchmarks)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=600, help="documents per corpus (GENIA: a tenth)")
    parser.add_argument("--adapter", help="adapter directory (default: the shipped tagger)")
    parser.add_argument("--types-file", default=str(TYPES_FILE))
    parser.add_argument("--only", help="comma-separated corpora of " + ", ".join(CORPORA))
    args = parser.parse_args()
    bulkner = Path(sys.executable).with_name("bulkner")
    cli = [str(bulkner)] if bulkner.exists() else [sys.executable, "-c", "from bulkner.cli import app; app()"]
    wanted = args.only.split(",") if args.only else list(CORPORA)
    result: dict = {"types_file": Path(args.types_file).name, "limit": args.limit, "gliner_biomed": GLINER_BIOMED_ZERO_SHOT}
    with tempfile.TemporaryDirectory() as scratch:
        for name in wanted:
            gold, fmt, types, divisor = CORPORA[name]
            if not gold.exists():
                result[name] = {"skipped": f"{gold} missing"}
                continue
            scores = Path(scratch) / f"{name}.json"
            command = [*cli, "eval", "--gold", str(gold), "--format", fmt, "--types", types, "--types-file",
                       args.types_file, "--limit", str(max(1, args.limit // divisor)), "--json", str(scores)]
            if args.adapter:
                command += ["--adapter", args.adapter]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"{' '.join(command)} exited {done.returncode}: {done.stderr[-2000:]}")
            report = json.loads(scores.read_text())
            result[name] = {
                "documents": report["documents"],
                "seconds": round(time.perf_counter() - started, 1),
                **{f"{m}_micro_f1": round(report[m]["micro"]["f1"], 4) for m in ("strict", "relaxed")},
                **{f"{m}_per_type_f1": {t: round(v["f1"], 4) for t, v in report[m]["per_type"].items()}
                   for m in ("strict", "relaxed")},
                "support": {t: v["support"] for t, v in report["strict"]["per_type"].items()},
                "command": " ".join(["bulkner", *command[len(cli):]]).replace(scratch, "DIR"),
            }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
