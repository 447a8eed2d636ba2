"""The run fingerprint: everything that changes what a run writes, hashed.

A rerun with the same fingerprint skips finished shards; a different one into the same output
directory is refused (see ``OutputDir.claim``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

from bulkner import prompt, segment, tagging
from bulkner.config import RunConfig
from bulkner.types import EntityType

_SAMPLE = 1 << 20


def _artifact(path: str | None) -> str | None:
    """Identify a model or adapter by content, not by where it lies: a local directory by its JSON
    and tokenizer files and, for weights, their sizes and first and last MiB (cheap for 16 GB
    checkpoints, yet different for any two trainings); anything else (an alias, a hub id) by name."""
    if path is None:
        return None
    local = Path(path).expanduser()
    if not local.is_dir():
        return path
    digest = hashlib.sha256()
    for f in sorted(p for p in local.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(local)).encode())
        if f.suffix in (".safetensors", ".bin", ".gguf", ".pt"):
            size = f.stat().st_size
            with f.open("rb") as handle:
                digest.update(str(size).encode() + handle.read(_SAMPLE))
                handle.seek(max(0, size - _SAMPLE))
                digest.update(handle.read(_SAMPLE))
        elif f.stat().st_size <= 16 * _SAMPLE:
            digest.update(f.read_bytes())
    return f"dir@{digest.hexdigest()[:24]}"


def _selector(config: RunConfig) -> str:
    """The selector's identity (version, weights hash, threshold), or ``none``."""
    if config.selector is None:
        return "none"
    from bulkner.selector import Selector

    return Selector(config.selector, config.selector_threshold).fingerprint()


def fingerprint(config: RunConfig, types: Sequence[EntityType], with_model: bool = True) -> dict:
    """The fingerprint of a run as a JSON-able dict with a ``hash`` key."""
    engine = config.engine
    parts = {
        "segmenter": segment.VERSION,
        "max_sentence_chars": config.max_sentence_chars,
    }
    if with_model:
        parts |= {
            "model": _artifact(engine.model),
            "adapter": _artifact(engine.adapter),
            "prompt": prompt.PROMPT_VERSION,
            "types": [[t.name, t.definition] for t in types],
            "decoding": {"greedy": True, "max_model_len": engine.max_model_len, "engine": engine.name, "dtype": engine.dtype},
            "parser": tagging.VERSION,
            "selector": _selector(config),
        }
    parts["hash"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return parts
