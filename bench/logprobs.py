"""What the generator's token log-probabilities cost: the default tagger on the same sentences with
and without them, one vLLM engine, rounds alternating; prints JSON.

    .venv/bin/python bench/logprobs.py [--gold G --format pubtator] [--limit 943] [--rounds 2]

The selector's generator-confidence feature needs each output token's log-probability
(``EngineConfig.logprobs``, vLLM ``SamplingParams(logprobs=0)``: the chosen token's only). This
measures its price in generation time on identical prompts (NCBI-disease development sentences by
default). A warm-up pass fills the prefix cache first, so both arms see it warm; then ``--rounds``
pairs of passes alternate off/on. Also checks that the generated text is identical with and
without log-probabilities (greedy decoding must not change).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NCBI_DEV = ROOT.parent / "shared" / "data" / "ner" / "ncbi_disease" / "NCBIdevelopset_corpus.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gold", default=str(NCBI_DEV))
    parser.add_argument("--format", default="pubtator")
    parser.add_argument("--limit", type=int, default=None, help="sentences (default: all)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from bulkner.config import EngineConfig, model_and_adapter
    from bulkner.corpora.registry import read_corpus
    from bulkner.evaluate import unique_documents
    from bulkner.pipeline import build_tagger, segment
    from bulkner.types import resolve_types

    corpus = read_corpus(args.format, args.gold)
    sentences = segment([g.document for g in unique_documents(corpus.documents)], 2000)[0][: args.limit]
    model, adapter = model_and_adapter(None, None)
    tagger = build_tagger(resolve_types(sorted(corpus.type_counts()), None), EngineConfig(model=model, adapter=adapter), len(sentences))
    engine = tagger.engine
    prompts = tagger.prepare(sentences).prompts

    def run(logprobs: bool) -> tuple[float, list]:
        engine.config, engine._params = replace(engine.config, logprobs=logprobs), {}
        started = time.perf_counter()
        out = engine.generate(prompts)
        return time.perf_counter() - started, out

    run(False)  # warm-up: prefix cache and kernels
    seconds = {False: [], True: []}
    texts = {}
    for _ in range(args.rounds):
        for logprobs in (False, True):
            took, out = run(logprobs)
            seconds[logprobs].append(took)
            texts[logprobs] = [g.text for g in out]
            reported = sum(g.token_logprobs is not None for g in out)
    tagger.close()
    off, on = min(seconds[False]), min(seconds[True])
    print(json.dumps({
        "gold": args.gold, "sentences": len(sentences), "rounds": args.rounds,
        "seconds_without": [round(s, 2) for s in seconds[False]], "seconds_with": [round(s, 2) for s in seconds[True]],
        "ratio_best": round(on / off, 3), "same_text": texts[False] == texts[True],
        "generations_with_logprobs": reported, "output_tokens": sum(len(t) for t in texts[True]),
    }))


if __name__ == "__main__":
    main()
