"""The oracle engine: answers every prompt with the gold-tagged sentence.

Feeding gold generations through the real pipeline (segmenter, parser, offset mapping) measures
what the pipeline itself loses, independent of any model: its ceiling.
"""

from __future__ import annotations

from typing import Sequence

from bulkner.corpora import GoldDocument
from bulkner.corpora.gold import SentenceGold, sentence_gold
from bulkner.engines.base import Generation, Prompt
from bulkner.schema import Sentence
from bulkner.tagging import DEFAULT_FORMAT, answer_format
from bulkner.types import EntityType


def oracle_targets(
    sentences: Sequence[Sentence], gold: Sequence[GoldDocument], types: Sequence[str], fmt: str = DEFAULT_FORMAT
) -> tuple[dict[str, str], SentenceGold]:
    """Gold answers in answer format ``fmt`` by sentence key for the mentions of ``types``, and the
    placement they came from (its ``cut`` and ``crossing`` mentions are those no answer can carry)."""
    answer = answer_format(fmt)
    placed = sentence_gold(sentences, gold, types, answer.crossing)
    return {s.key: answer.render(s.text, placed.spans[s.key], types) for s in sentences}, placed


class OraclePrompts:
    """Prompt builder for the oracle: prompts carry only the sentence id."""

    def __init__(self, types: Sequence[EntityType], fmt: str = DEFAULT_FORMAT) -> None:
        self.types = list(types)
        self.answer = answer_format(fmt)
        self.max_model_len = 0

    def build(self, sentence: Sentence, window=None) -> Prompt:
        """The sentence's prompt; the oracle answers whole sentences (no ``--generate window``)."""
        if window is not None:
            raise ValueError("the oracle answers whole sentences: no --generate window")
        return Prompt(id=sentence.key, token_ids=(), max_tokens=0)


class OracleEngine:
    """Answers each prompt id with its gold target."""

    name = "oracle"

    def __init__(self, targets: dict[str, str]) -> None:
        self.targets = targets

    def generate(self, prompts: Sequence[Prompt]) -> list[Generation]:
        return [Generation(p.id, self.targets[p.id], 0, 0) for p in prompts]

    def close(self) -> None:
        self.targets = {}
