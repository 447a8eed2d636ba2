"""Span selector training data and threshold calibration."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulkner.selectors.train import MAX_F1_LOSS, calibrate, calibrate_repair, cascade_band, combined_f1, source_sentences, split_rows
from tests.selectors.test_span import PROBS

NER = Path(__file__).resolve().parents[3] / "shared" / "data" / "ner"
BC5CDR_DEV = NER / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt"
NCBI_DEV = NER / "ncbi_disease" / "NCBIdevelopset_corpus.txt"


def test_calibration_chooses_keep_and_add_thresholds_on_held_out_sentences():
    gold = {(0, 9, 0), (10, 30, 1)}
    # the generator found one right span and one wrong boundary: dropping the wrong one and adding
    # the right one is best; adding (40, 50)-ish chemicals (not gold) costs precision
    items = [(PROBS, [(0, 9, 0), (10, 20, 1)], [0, 1], gold)]
    calibration = calibrate(items)
    assert calibration["f1_without_selector"] == pytest.approx(0.5)
    assert calibration["f1"] == pytest.approx(1.0) == combined_f1(items, calibration["threshold"], calibration["add_threshold"])
    assert 0.3 < calibration["threshold"] <= 0.9 and 0.88 < calibration["add_threshold"] <= 0.95
    assert calibration["f1_filter_only"] == pytest.approx(2 / 3)


def test_repair_is_calibrated_only_where_it_beats_keeping_the_boundaries():
    """The generator's "retinoic acid" (10, 20) at 0.3 for Disease, kept at keep 0.2; the
    classifier gives the gold span (10, 30) 0.95: a repair with margin <= 0.65 fixes it. Where the
    generator's span is the gold one, no repair wins and none is chosen."""
    gold = {(0, 9, 0), (10, 30, 1)}
    items = [(PROBS, [(0, 9, 0), (10, 20, 1)], [0, 1], gold)]
    repair = calibrate_repair(items, 0.2, 1.01)
    assert repair["f1_without"] == pytest.approx(0.5) and repair["f1"] == pytest.approx(1.0)
    assert repair["margin"] <= 0.65 and repair["floor"] <= 0.95
    assert combined_f1(items, 0.2, 1.01, (repair["margin"], repair["floor"])) == pytest.approx(1.0)
    right = [(PROBS, [(0, 9, 0), (10, 20, 1)], [0, 1], {(0, 9, 0), (10, 20, 1)})]
    assert calibrate_repair(right, 0.2, 1.01) is None


def test_a_source_listed_twice_weighs_twice_in_training_and_is_held_out_once():
    if not BC5CDR_DEV.is_file():
        pytest.skip("shared data missing")
    from bulkner.selectors.train import SelectorTrainConfig
    from bulkner.training.data import TrainSource

    bc5cdr, ncbi = TrainSource("pubtator", str(BC5CDR_DEV), documents=5), TrainSource("pubtator", str(NCBI_DEV), documents=5)
    once = split_rows(SelectorTrainConfig(sources=(bc5cdr, ncbi), out="unused", dev_fraction=0.2))
    twice = split_rows(SelectorTrainConfig(sources=(bc5cdr, ncbi, bc5cdr), out="unused", dev_fraction=0.2))
    assert [s.key for s, _, _ in twice[1]] == [s.key for s, _, _ in once[1]]  # the same held-out sentences
    held_out = {s.key for s, _, _ in once[1]}
    assert not held_out & {s.key for s, _, _ in twice[0]}
    bc5 = [s.key for s, _, types in once[0] if len(types) == 2]
    assert len(twice[0]) == len(once[0]) + len(bc5) and twice[2]["Chemical"] == 2 * once[2]["Chemical"]


def test_cascade_band_skips_the_generator_where_the_classifier_is_sure_and_right():
    """Sentences 1 and 3: every span far from 0.05-0.8 and the classifier alone right: skipped.
    Sentence 2: the generator's right span at 0.45 for the classifier (inside every band): generated."""
    sure = {**PROBS, (10, 20): [0.99, 0.0, 0.01]}
    gold = {(10, 30, 1), (0, 9, 0), (45, 50, 0)}
    unsure = {(0, 9): [0.55, 0.45, 0.0]}
    items = [(sure, sorted(gold), [0, 1], gold), (unsure, [(0, 9, 0)], [0, 1], {(0, 9, 0)}), (sure, sorted(gold), [0, 1], gold)]
    band = cascade_band(items, 0.0, 1.01)
    assert band["f1_all"] == 1.0 and band["f1"] >= 1.0 - MAX_F1_LOSS
    assert band["generated_sentences"] == 1 and band["generated_share"] == round(1 / 3, 4)
    assert 0.02 < band["low"] and band["high"] <= 0.85  # sentence 1's 0.01 and 0.02 below it, 0.85 and up above


def test_training_rows_carry_gold_spans_and_their_sources_types():
    """Each source keeps its own types (NCBI-disease annotates no Chemical: masked in the loss, not
    a negative), gold spans are exact substrings of their sentences, and the held-out split is the
    same for training and recalibration (one seed)."""
    if not (BC5CDR_DEV.is_file() and NCBI_DEV.is_file()):
        pytest.skip("shared data missing")
    from bulkner.selectors.train import SelectorTrainConfig
    from bulkner.training.data import TrainSource

    sources = (TrainSource("pubtator", str(BC5CDR_DEV), documents=5), TrainSource("pubtator", str(NCBI_DEV), documents=5))
    rows, counts = source_sentences(sources, None)
    assert {tuple(t.name for t in types) for _, _, types in rows} == {("Chemical", "Disease"), ("Disease",)}
    assert counts["Chemical"] > 0 and counts["Disease"] > 0
    assert sum(len(gold) for _, gold, _ in rows) == sum(counts.values())
    for sentence, gold, _ in rows:
        assert all(0 <= g.start < g.end <= len(sentence.text) for g in gold)
    config = SelectorTrainConfig(sources=sources, out="unused", dev_fraction=0.2)
    first, second = split_rows(config), split_rows(config)
    assert [s.key for s, _, _ in first[1]] == [s.key for s, _, _ in second[1]] and len(first[1]) == round(0.2 * len(rows))
    assert not {s.key for s, _, _ in first[0]} & {s.key for s, _, _ in first[1]}


def test_config_refuses_bad_values():
    from bulkner.selectors.train import SelectorTrainConfig

    with pytest.raises(ValueError, match="no training sources"):
        SelectorTrainConfig(sources=(), out="x")
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        SelectorTrainConfig(sources=("s",), out="x", epochs=0)
    with pytest.raises(ValueError, match="dev_fraction"):
        SelectorTrainConfig(sources=("s",), out="x", dev_fraction=1.0)


def test_held_out_predictions_generate_on_the_held_out_sentences_only(tiny_model_dir, monkeypatch):
    """``train-selector --adapter/--model``: the generator runs on the held-out sentences alone,
    asked for every type of the sources (the tiny random model's spans, whatever they are, lie in
    those sentences)."""
    if not (BC5CDR_DEV.is_file() and NCBI_DEV.is_file()):
        pytest.skip("shared data missing")
    from bulkner.config import EngineConfig
    from bulkner.evaluation import evaluate
    from bulkner.selectors.train import SelectorTrainConfig, held_out_predictions
    from bulkner.training.data import TrainSource

    config = SelectorTrainConfig(sources=(TrainSource("pubtator", str(NCBI_DEV), documents=3),
                                          TrainSource("pubtator", str(BC5CDR_DEV), documents=3)), out="unused", dev_fraction=0.3)
    seen = {}
    real_predict = evaluate.predict

    def spy(sentences, rejects, tagger, progress=False):
        seen["keys"], seen["types"] = [s.key for s in sentences], [t.name for t in tagger.builder.types]
        return real_predict(sentences, rejects, tagger, progress)

    monkeypatch.setattr(evaluate, "predict", spy)
    engine = EngineConfig(name="transformers", model=str(tiny_model_dir), max_model_len=512, answer_format="brackets")
    spans = held_out_predictions(config, engine, batch_sentences=64)
    _, dev_rows, _ = split_rows(config)
    assert seen["keys"] == list(dict.fromkeys(s.key for s, _, _ in dev_rows)) and len(dev_rows) < 30
    assert seen["types"] == ["Disease", "Chemical"]  # NCBI's, then BC5CDR's new one
    texts = {s.key: s.text for s, _, _ in dev_rows}
    assert set(spans) <= set(texts) and all(0 <= sp.start < sp.end <= len(texts[k]) for k, found in spans.items() for sp in found)
