"""Where constrained decoding overrides the model: `bulkner eval --constrain` on a gold corpus with
vLLM's raw log-probabilities (computed before logits processors), JSON on stdout (the eval's
table on stderr).

A token the constraint let through at raw rank > 1 is one the model would not have written. Every
window answer ends on such a token (the grammar ends it at the window, the model would copy on),
so end tokens are counted apart; the rest are where the model wanted to leave the answer format
over the source. The JSON gives the counts, the rank of each such token and the answers with one
(``--show N`` of them, with the text around the first).

    VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=4 .venv/bin/python scripts/constrained_forcing.py \\
        ../shared/data/ner/bc5cdr/CDR_DevelopmentSet.PubTator.txt --types Chemical,Disease --out /tmp/forcing

The eval's own JSON and predictions go to ``--out``. Run it on the vLLM engine (the default where
vLLM runs), which asks each constrained prompt for ``logprobs=0`` (the chosen token's rank only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections import Counter
from pathlib import Path

from bulkner.engines import vllm_engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gold")
    parser.add_argument("--format", default="pubtator")
    parser.add_argument("--types", required=True)
    parser.add_argument("--out", required=True, help="directory for the eval's JSON and predictions")
    parser.add_argument("--show", type=int, default=20)
    args = parser.parse_args()
    answers: dict[str, dict] = {}
    stop_ids: set[int] = set()
    to_generation = vllm_engine._to_generation

    def recorded(prompt, output, *rest):
        completion = output.outputs[0]
        if completion.logprobs is not None:
            at, forced = 0, []
            for token, logprobs in zip(completion.token_ids, completion.logprobs):
                piece, rank = logprobs[token].decoded_token or "", logprobs[token].rank
                if rank > 1:
                    forced.append((at, piece, rank, token in stop_ids))
                at += len(piece)
            answers[prompt.id] = {"forced": forced, "text": completion.text}
        return to_generation(prompt, output, *rest)

    setup = vllm_engine.VllmEngine.setup

    def setup_and_read_stop_ids(self):
        setup(self)
        stop_ids.update(self._stop_ids)

    vllm_engine._to_generation = recorded
    vllm_engine.VllmEngine.setup = setup_and_read_stop_ids

    from bulkner.cli import app  # not cli.main: no restart, the patches stay

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(sys.stderr):  # the eval's table: stdout stays one JSON document
        app(["eval", "--gold", args.gold, "--format", args.format, "--types", args.types, "--constrain",
             "--json", str(out / "eval.json"), "--predictions", str(out / "predictions.jsonl")], standalone_mode=False)
    inside = {key: [f for f in a["forced"] if not f[3]] for key, a in answers.items()}
    inside = {key: forced for key, forced in inside.items() if forced}
    ranks = Counter(rank for forced in inside.values() for _, _, rank, _ in forced)
    print(json.dumps({
        "constrained_answers": len(answers),
        "answers_ending_on_a_forced_end_token": sum(any(f[3] for f in a["forced"]) for a in answers.values()),
        "answers_with_another_forced_token": len(inside),
        "forced_tokens_by_rank": {"2": ranks[2], "3-10": sum(n for r, n in ranks.items() if 3 <= r <= 10),
                                  "over 10": sum(n for r, n in ranks.items() if r > 10)},
        "escaped_source_brackets_forced": sum(1 for forced in inside.values() for _, piece, _, _ in forced if "\\" in piece),
        "examples": {key: {"forced": [(at, piece, rank) for at, piece, rank, _ in forced][:6],
                           "around_first": answers[key]["text"][max(0, forced[0][0] - 40) : forced[0][0] + 40]}
                     for key, forced in list(inside.items())[: args.show]},
    }, indent=1))


if __name__ == "__main__":
    main()
