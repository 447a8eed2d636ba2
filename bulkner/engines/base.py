"""The engine interface: prompts in, generations out, joined back by id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class Prompt:
    """One generation request. ``id`` is the sentence key; ``token_ids`` is the full prompt with the
    chat template applied, shared instruction prefix first and the sentence last (so prefix
    caching shares everything but the tail)."""

    id: str
    token_ids: tuple[int, ...]
    max_tokens: int
    constraint: Constraint | None = None
    """When set, the engine may only write answers of this grammar (constrained decoding)."""
    answer_prefix: str = ""
    """The head of the answer, already written: ``token_ids`` end with it and the engine continues
    it (``--generate window``; the caller parses ``answer_prefix`` + the generation)."""
    stop: str | None = None
    """Text that ends the answer where the engine would write it; the engine stops after writing it
    (or goes on, where it cannot stop on text), and the caller cuts the answer there (``Tagger``)."""


@dataclass(frozen=True)
class Constraint:
    """What constrains one answer: the answer format's grammar over the source sentence, for the
    requested types (plain data: it travels to engine processes)."""

    format: str
    sentence: str
    types: tuple[str, ...]


@dataclass(frozen=True)
class Generation:
    """The model's answer to one prompt."""

    id: str
    text: str
    prompt_tokens: int
    output_tokens: int
    finished: bool = True
    """False when generation stopped at ``max_tokens`` rather than at an end-of-sequence token."""
    forced: tuple[tuple[int, int], ...] = ()
    """Under a constraint: the ``[start, end)`` character ranges of ``text`` written by tokens the
    constraint chose over the model's own first choice (never the end token); empty otherwise."""


class Engine(Protocol):
    """Built once per worker (``setup``), used for many batches, released with ``close``."""

    name: str

    def generate(self, prompts: Sequence[Prompt]) -> list[Generation]:
        """Generate for every prompt; the result may be in any order (callers join by id)."""
        ...

    def close(self) -> None:
        """Release the model and its memory."""
        ...


def join_by_id(prompts: Sequence[Prompt], generations: Sequence[Generation]) -> list[Generation]:
    """Return ``generations`` in the order of ``prompts``.

    Raises ``RuntimeError`` when a prompt has no generation, has several, or a generation answers
    an id that was never asked: an engine that loses or duplicates output must fail loudly.
    """
    by_id: dict[str, Generation] = {}
    for gen in generations:
        if gen.id in by_id:
            raise RuntimeError(f"engine returned two generations for prompt id {gen.id!r}")
        by_id[gen.id] = gen
    asked = {p.id for p in prompts}
    if len(asked) != len(prompts):
        raise RuntimeError("duplicate prompt ids in one batch")
    missing = [p.id for p in prompts if p.id not in by_id]
    if missing:
        raise RuntimeError(f"engine returned no generation for {len(missing)} prompt(s), e.g. {missing[0]!r}")
    extra = set(by_id) - asked
    if extra:
        raise RuntimeError(f"engine returned generations for unknown ids, e.g. {sorted(extra)[0]!r}")
    return [by_id[p.id] for p in prompts]
