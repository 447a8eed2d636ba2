"""The transformers engine: the fallback where vLLM cannot run. Same interface, plain ``generate``.

Prompts are sorted by length and run in micro-batches, left-padded, greedy. Each answer is cut at
its own ``max_tokens`` and at the first end token, so results match what vLLM returns.
"""

from __future__ import annotations

import gc
import logging
import time
from functools import partial
from typing import Any, Sequence

from bulkner.config import EngineConfig
from bulkner.engines.base import Generation, Prompt
from bulkner.checkpoints import end_token_ids, resolve_model

logger = logging.getLogger(__name__)

MICRO_BATCH = 32
"""Prompts per ``model.generate`` call."""
_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def cut_answer(new_ids: Sequence[int], max_tokens: int, stop_ids: set[int]) -> tuple[list[int], bool]:
    """The generated ids up to and including the first stop id, at most ``max_tokens`` of them.

    Returns the ids and whether the answer ended on a stop id (vLLM counts that token too).
    """
    kept: list[int] = []
    for token in new_ids[:max_tokens]:
        kept.append(int(token))
        if token in stop_ids:
            return kept, True
    return kept, False


def micro_batches(prompts: Sequence[Prompt], size: int) -> list[list[Prompt]]:
    """Prompts sorted by length (least padding), cut into batches of at most ``size``."""
    ordered = sorted(prompts, key=lambda p: len(p.token_ids))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


class TransformersEngine:
    """Greedy batched generation with a transformers causal LM (optionally with a peft adapter)."""

    name = "transformers"

    def __init__(self, config: EngineConfig, *, micro_batch: int = MICRO_BATCH) -> None:
        """Store the config; the model is loaded in ``setup``."""
        if micro_batch < 1:
            raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
        self.config = config
        self.micro_batch = micro_batch
        self._model: Any = None
        self._tokenizer: Any = None
        self._stop_ids: set[int] = set()
        self._pad_id = 0
        self._vocabulary: Any = None
        """Token bytes for constrained decoding (``bulkner.kernels.constrain.Vocabulary``), built on first use."""
        self._device = "cpu"
        self.startup_seconds = 0.0

    def setup(self) -> None:
        """Load model, tokenizer and adapter (once per worker)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.perf_counter()
        model_dir = resolve_model(self.config.model)
        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype_name = self.config.dtype if self.config.dtype != "auto" else (
            "bfloat16" if self._device == "cuda" else "float32"
        )
        self._tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, _DTYPES[dtype_name]))
        if self.config.adapter:
            model = _with_adapter(model, self.config.adapter)
        self._model = model.to(self._device).eval()
        self._stop_ids = set(end_token_ids(self._tokenizer, model_dir))
        pad = self._tokenizer.pad_token_id
        self._pad_id = pad if isinstance(pad, int) else min(self._stop_ids)
        self.startup_seconds = time.perf_counter() - started
        logger.info("transformers engine ready on %s (%s) in %.1f s", self._device, dtype_name, self.startup_seconds)

    def generate(self, prompts: Sequence[Prompt]) -> list[Generation]:
        """Generate greedily for all prompts; results in prompt order."""
        if self._model is None:
            raise RuntimeError("TransformersEngine.generate called before setup()")
        for prompt in prompts:
            if prompt.max_tokens < 1:
                raise ValueError(f"prompt {prompt.id!r} has max_tokens {prompt.max_tokens}; must be >= 1")
        by_id: dict[str, Generation] = {}
        for batch in micro_batches(prompts, self.micro_batch):
            by_id.update((g.id, g) for g in self._generate_batch(batch))
        return [by_id[p.id] for p in prompts]

    def _generate_batch(self, batch: Sequence[Prompt]) -> list[Generation]:
        """One left-padded ``model.generate`` call over ``batch``."""
        import torch

        width = max(len(p.token_ids) for p in batch)
        ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, prompt in enumerate(batch):
            ids[row, width - len(prompt.token_ids) :] = torch.tensor(prompt.token_ids, dtype=torch.long)
            mask[row, width - len(prompt.token_ids) :] = 1
        processors = self._constraints(batch, width)
        with torch.inference_mode():
            out = self._model.generate(
                logits_processor=processors,
                input_ids=ids.to(self._device),
                attention_mask=mask.to(self._device),
                max_new_tokens=max(p.max_tokens for p in batch),
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                eos_token_id=sorted(self._stop_ids),
                pad_token_id=self._pad_id,
            )
        from bulkner.kernels.constrain import forced_ranges

        generations = []
        decode = partial(self._tokenizer.decode, skip_special_tokens=True)
        for row, prompt in enumerate(batch):
            kept, finished = cut_answer(out[row, width:].tolist(), prompt.max_tokens, self._stop_ids)
            forced = forced_ranges(decode, kept, processors[0].forced[row]) if processors else ()
            generations.append(Generation(prompt.id, decode(kept), len(prompt.token_ids), len(kept), finished, forced))
        return generations

    def _constraints(self, batch: Sequence[Prompt], width: int) -> Any:
        """The logits processors of a batch: its prompts' constraints, if any carries one."""
        from transformers import LogitsProcessorList

        if all(p.constraint is None for p in batch):
            return LogitsProcessorList()
        from bulkner.kernels.constrain import TransformersConstraints, Vocabulary, constraint_for

        if self._vocabulary is None:
            self._vocabulary = Vocabulary.of(self._tokenizer, self._stop_ids)
        rows = [p.constraint and constraint_for(self._vocabulary, p.constraint, p.max_tokens) for p in batch]
        return LogitsProcessorList([TransformersConstraints(rows, width)])

    def close(self) -> None:
        """Drop the model and free its memory."""
        if self._model is None:
            return
        self._model = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _with_adapter(model: Any, adapter: str) -> Any:
    """``model`` with the peft adapter at ``adapter`` merged in."""
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise ImportError(f"LoRA adapters in the transformers engine need peft: pip install 'bulkner[train]' ({exc})") from exc
    return PeftModel.from_pretrained(model, adapter).merge_and_unload()
