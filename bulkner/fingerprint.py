"""The run fingerprint: everything that changes what a run writes, hashed.

A rerun with the same fingerprint skips finished shards; a different one into the same output
directory is refused (see ``OutputDir.claim``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from bulkner import tagging
from bulkner.connectors import discover
from bulkner.kernels import constrain
from bulkner.linking import abbreviations, names
from bulkner.linking.link import Linker
from bulkner.pipeline import prompt, sentences
from bulkner.config import RunConfig, generation_mode
from bulkner.checkpoints import content_id, trained_format
from bulkner.types import EntityType


def _artifact(path: str | None) -> str | None:
    """A local model or adapter directory by content (``checkpoints.content_id``); anything else (an
    alias, a hub id) by name."""
    if path is None:
        return None
    return f"dir@{content_id(path)}" if Path(path).expanduser().is_dir() else path


def _selector(config: RunConfig) -> str:
    """The selector's identity (kind, version, weights hash, thresholds), or ``none``."""
    if config.selector is None:
        return "none"
    from bulkner.selectors import open_selector

    return open_selector(config.selector, config.selector_threshold).fingerprint()


def _band(config: RunConfig, mode: str) -> dict:
    """The cascade's mode and the selector's calibrated band it uses."""
    from bulkner.selectors import open_selector

    return {"mode": mode, "band": open_selector(config.selector).band}


def fingerprint(config: RunConfig, types: Sequence[EntityType], with_model: bool = True) -> dict:
    """The fingerprint of a run as a JSON-able dict with a ``hash`` key."""
    engine = config.engine
    parts = {
        "input": asdict(config.input),
        "reader": discover.READER_VERSION,
        "segmenter": sentences.VERSION,
        "max_sentence_chars": config.max_sentence_chars,
    }
    if with_model:
        fmt = engine.answer_format or trained_format(engine.model, engine.adapter)
        mode = generation_mode(config.generate, config.selector, fmt)
        parts |= {
            "model": _artifact(engine.model),
            "adapter": _artifact(engine.adapter),
            "prompt": prompt.PROMPT_VERSION,
            "types": [[t.name, t.definition] for t in types],
            "decoding": {"greedy": True, "max_model_len": engine.max_model_len, "engine": engine.name, "dtype": engine.dtype}
                        | ({"constrained": constrain.VERSION} if engine.constrain else {}),  # runs from before it keep their hash
            "parser": tagging.VERSION,
            "answer_format": tagging.answer_format(fmt).id,
            "selector": _selector(config),
        } | ({"abbreviations": abbreviations.VERSION} if config.abbreviations else {}) \
          | ({"names": names.VERSION} if config.names and config.selector is not None else {}) \
          | ({"generate": _band(config, mode)} if mode != "all" else {}) \
          | ({"linking": Linker(config.kb).fingerprint()} if config.link else {})  # runs from before these keep their hash
    parts["hash"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return parts
