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



def _artifact(path: str | None) -> str | None:
    """Identify a model or adapter: a local directory by its config and weight files, else the name."""
    if path is None:
        return None
    local = Path(path)
    if not local.is_dir():
        return path
    digest = hashlib.sha256()
    for f in sorted(local.iterdir()):
        if f.suffix == ".json":
            digest.update(f.name.encode() + f.read_bytes())
        elif f.suffix in (".safetensors", ".bin", ".gguf"):
            digest.update(f"{f.name}:{f.stat().st_size}".encode())
    return f"{local.name}@{digest.hexdigest()[:16]}"


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
            "types": {t.name: t.definition for t in types},
            "decoding": {"greedy": True, "max_model_len": engine.max_model_len},
            "parser": tagging.VERSION,
            "selector": _selector(config),
        }
    parts["hash"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return parts
