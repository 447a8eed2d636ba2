"""What constrained decoding does on held-out training sentences (never development data): the
default tagger on the shipped selector's calibration sentences (the held-out tenth of its training
sources), free and constrained, and held-out strict F1 of generator plus selector at the selector's
calibrated keep/add thresholds and boundary repair for
- the free answers,
- the constrained answers, every span a proposal,
- the constrained answers with the spans that text the constraint forced on the model touches left
  to the selector (``Generation.forced``; what ``--constrain`` does).
JSON on stdout. Needs ``bash scripts/six_types.sh data`` first (runs/data); about 6 minutes on 2 cores.

    VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=4 .venv/bin/python scripts/constrained_heldout.py
"""

from __future__ import annotations

import contextlib
import json
import sys

from bulkner.checkpoints import default_selector
from bulkner.config import EngineConfig, model_and_adapter
from bulkner.engines import vllm_engine
from bulkner.selectors import open_selector
from bulkner.selectors.train import SelectorTrainConfig, combined_f1, held_out_predictions, split_rows
from bulkner.tagging import answer_format
from bulkner.training.data import TrainSource

D, R, SIX = "../shared/data/ner", "runs/data", "Gene,Chemical,Disease,Species,Variant,CellLine"
SOURCES = [  # the shipped selector's (its selector.json): the split, and so the held-out sentences, are the same
    f"pubtator:{D}/biored/Train.filtered.PubTator:{SIX}", f"pubtator:{D}/biored/Train.filtered.PubTator:{SIX}",
    f"pubtator:{R}/tmvar3-train.PubTator:Gene,Species,Variant,CellLine",
    f"pubtator:{D}/bc5cdr/CDR_TrainingSet.PubTator.txt:Chemical,Disease",
    f"pubtator:{D}/ncbi_disease/NCBItrainset_corpus.txt:Disease", f"brat:{D}/s800/train:Species",
    f"pubtator:{R}/jnlpba-train-cellline.PubTator:CellLine", f"pubtator:{R}/jnlpba-train-cellline.PubTator:CellLine",
]


def main() -> None:
    config = SelectorTrainConfig(sources=tuple(TrainSource.parse(s) for s in SOURCES), out="unused")
    _, held_out, _ = split_rows(config)
    text = {}  # by key, the first sentence of a key, as held_out_predictions tags it
    for sentence, _, _ in held_out:
        text.setdefault(sentence.key, sentence.text)
    model, adapter = model_and_adapter(None, None)
    generations: dict = {}
    generate = vllm_engine.VllmEngine.generate

    def recording(self, prompts):
        out = generate(self, prompts)
        generations.update((g.id, g) for g in out)
        return out

    vllm_engine.VllmEngine.generate = recording
    spans = {}
    for constrain in (False, True):  # the constrained run's generations are the ones kept
        generations.clear()
        with contextlib.redirect_stdout(sys.stderr):  # vLLM logs to stdout: it stays one JSON document
            spans[constrain] = held_out_predictions(config, EngineConfig(name="vllm", model=model, adapter=adapter, constrain=constrain))
    types = sorted({t.name for _, _, annotated in held_out for t in annotated})
    brackets = answer_format("brackets")
    forced = {key: brackets.forced(g.text, text[key], types, g.forced) for key, g in generations.items() if g.forced and key in text}
    selector = open_selector(default_selector(), device="cpu")
    probs = selector.probs([sentence.text for sentence, _, _ in held_out])
    index = selector.types.index

    def f1(predictions, left_out=None) -> float:
        items = []
        for (sentence, gold, annotated), p in zip(held_out, probs):
            names = [t.name for t in annotated]
            proposed = [(s.start, s.end, index(s.type)) for s in dict.fromkeys(predictions.get(sentence.key, ()))
                        if s.type in names and s not in (left_out or {}).get(sentence.key, ())]
            items.append((p, proposed, [index(n) for n in names], {(g.start, g.end, index(g.type)) for g in gold}))
        return round(100 * combined_f1(items, selector.threshold, selector.add_threshold, selector.repair), 2)

    gold = {sentence.key: set(g) for sentence, g, _ in held_out}
    print(json.dumps({
        "sentences": len(held_out),
        "constrained_answers_with_forced_text": len(forced),
        "forced_spans": sum(len(s) for s in forced.values()),
        "forced_spans_gold": sum(len(s & gold.get(k, set())) for k, s in forced.items()),
        "selector": {"keep": selector.threshold, "add": selector.add_threshold, "repair": selector.repair},
        "heldout_f1": {"free": f1(spans[False]), "constrained": f1(spans[True]),
                       "constrained_forced_left_to_selector": f1(spans[True], forced)},
    }, indent=1))


if __name__ == "__main__":
    main()
