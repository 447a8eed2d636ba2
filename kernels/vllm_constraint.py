"""Constrained decoding in vLLM: a V1 engine logits processor (``vllm.v1.sample.logits_processor``).

vLLM builds one :class:`SourceConstraint` per engine (``LLM(logits_processors=[PATH])``); a
request carries its constraint in ``SamplingParams.extra_args["bulkner_constraint"]`` (format,
sentence, types as plain data) and requests without one are left free. vLLM hands the processor
each request's live list of output tokens, so the automaton state is brought up to date from it
before every step, preemption and re-admission included. The processor changes the argmax, so
it runs under greedy decoding too (``is_argmax_invariant`` is False). vLLM refuses logits
processors together with speculative decoding, and its model runner V2 has another processor
interface: ``VllmEngine`` turns that runner off when it constrains (it is not used on CPU).
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from bulkner.checkpoints import end_token_ids
from bulkner.engines.base import Constraint as Spec
from bulkner.kernels.constrain import Constraint, Vocabulary, constraint_for, mask_disallowed

KEY = "bulkner_constraint"
"""The ``SamplingParams.extra_args`` key of a request's constraint: ``[format, sentence, [types]]``."""


class _Request:
    """One request's constraint and its live output token list."""

    def __init__(self, constraint: Constraint, output_ids: list[int]) -> None:
        self.constraint, self.output_ids = constraint, output_ids


class SourceConstraint(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        from vllm.tokenizers.registry import cached_tokenizer_from_config

        tokenizer = cached_tokenizer_from_config(vllm_config.model_config)
        self.vocabulary = Vocabulary.of(tokenizer, end_token_ids(tokenizer, vllm_config.model_config.model))
        self.requests: dict[int, _Request] = {}

    @classmethod
    def validate_params(cls, params) -> None:
        value = (params.extra_args or {}).get(KEY)
        if value is not None and not (isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[1], str)):
            raise ValueError(f"extra_args[{KEY!r}] must be [format, sentence, [types]], got {value!r}")

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        def admit(params, _prompt_ids, output_ids):
            value = (params.extra_args or {}).get(KEY)
            if value is None:
                return None
            fmt, sentence, types = value
            return _Request(constraint_for(self.vocabulary, Spec(fmt, sentence, tuple(types)), params.max_tokens), output_ids)

        process_dict_updates(self.requests, batch_update, admit)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        rows = {}
        for row, request in self.requests.items():
            request.constraint.advance(request.output_ids)
            rows[row] = request.constraint
        return mask_disallowed(logits, rows)


def extra_args(spec: Spec) -> dict:
    """``SamplingParams.extra_args`` for a prompt's constraint."""
    return {KEY: [spec.format, spec.sentence, list(spec.types)]}
