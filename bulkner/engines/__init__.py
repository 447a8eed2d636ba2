"""Engines turn prompts into generations. ``build_engine`` picks one by name and sets it up.

Engine modules import their heavy libraries (vllm, torch) in ``setup`` only, so importing this
package is cheap and works without vLLM.
"""

from __future__ import annotations

import importlib.util
import logging

from bulkner.config import ENGINES, EngineConfig
from bulkner.engines.base import Engine, Generation, Prompt, join_by_id
from bulkner.hardware import cpu_has_avx2

logger = logging.getLogger(__name__)

__all__ = ["Engine", "Generation", "Prompt", "build_engine", "engine_available", "join_by_id"]

def build_engine(config: EngineConfig) -> Engine:
    """Construct the engine ``config.name`` and call its ``setup``."""
    if config.name == "vllm":
        from bulkner.engines.vllm_engine import VllmEngine

        engine: Engine = VllmEngine(config)
    elif config.name == "transformers":
        from bulkner.engines.transformers_engine import TransformersEngine

        engine = TransformersEngine(config)
    else:
        raise ValueError(f"build_engine builds {' and '.join(ENGINES)}, not {config.name!r}")
    engine.setup()  # type: ignore[attr-defined]
    return engine


def engine_available(name: str) -> tuple[bool, str]:
    """Whether engine ``name`` can run on this machine, and if not, why (for the CLI's fallback)."""
    if name == "transformers":
        missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
        if missing:
            return False, f"{' and '.join(missing)} not installed: pip install torch transformers"
        return True, ""
    if name == "vllm":
        return _vllm_available()
    return False, f"unknown engine {name!r}"


def _vllm_available() -> tuple[bool, str]:
    """vLLM is importable, and on a CPU-only machine the CPU has the AVX2 its CPU build needs."""
    if importlib.util.find_spec("vllm") is None:
        return False, "vLLM is not installed: pip install 'bulkner[cpu]' (CPU) or 'bulkner[gpu]' (CUDA)"
    if importlib.util.find_spec("torch") is None:
        return False, "torch is not installed"
    import torch

    if torch.cuda.is_available():
        return True, ""
    if not cpu_has_avx2():
        return False, "no CUDA GPU and this CPU lacks AVX2, which the vLLM CPU build needs"
    return True, ""
