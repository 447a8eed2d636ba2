"""Training examples in LLMNER format: the exact inference prompt, then the gold-tagged answer.

Each gold corpus (a :class:`TrainSource`) is read, segmented into sentences as at inference, and
every sentence becomes one example: ``PromptBuilder(types).build(sentence)`` token ids (each
source keeps its own type list, as in LLMNER's joint multi-dataset training) followed by the
rendered gold target and the token that ends the assistant turn (the one engines stop on).
Labels are ``-100`` over the prompt, so the loss covers the answer only.

Nothing is dropped silently: the report counts, per source, sentences too long for
``max_length``, mentions cut by sentence boundaries, same-type crossing mentions dropped by
``resolve_crossing`` (``keep_longer``) and mentions of types outside the source's type list.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from bulkner.corpora.registry import FORMATS, read_corpus
from bulkner.corpora.gold import sentence_gold
from bulkner.training.lexicon import dense_samples, read_lexicon
from bulkner.checkpoints import end_token_ids
from bulkner.config import MAX_SENTENCE_CHARS
from bulkner.pipeline.tagger import segment
from bulkner.pipeline.prompt import PromptBuilder, Tokenizer, messages
from bulkner.tagging import DEFAULT_FORMAT, answer_format
from bulkner.types import resolve_types

logger = logging.getLogger(__name__)

IGNORE = -100
"""Label of tokens that carry no loss (prompt and padding)."""
_MARK = "\u0000ANSWER\u0000"


@dataclass(frozen=True)
class TrainSource:
    """One gold corpus to train on."""

    fmt: str
    """Corpus format, as ``read_corpus`` takes it (``pubtator``, ``cmeee``, ...)."""
    path: str
    """Corpus file or folder."""
    types: tuple[str, ...] | None = None
    """Type names the prompt lists, in order; None means the corpus's types, sorted (as ``eval``)."""
    documents: int | None = None
    """Use only the first N documents (quick runs and tests); None means all."""

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ValueError(f"unknown corpus format {self.fmt!r}; formats are {', '.join(FORMATS)}")
        if self.types is not None and not self.types:
            raise ValueError("TrainSource.types must be None (the corpus's types) or non-empty")
        if self.documents is not None and self.documents < 1:
            raise ValueError(f"TrainSource.documents must be >= 1 or None, got {self.documents}")

    @classmethod
    def parse(cls, spec: str) -> "TrainSource":
        """``FORMAT:PATH``, ``FORMAT:PATH:Type1,Type2`` or ``FORMAT:PATH:Type1,Type2:N`` (the first N
        documents only; the CLI form)."""
        fmt, sep, path = spec.partition(":")
        types, documents = "", None
        if ":" in path and not Path(path).exists():
            path, _, types = path.rpartition(":")
            if types.isdigit() and ":" in path and not Path(path).exists():
                documents = int(types)
                path, _, types = path.rpartition(":")
        if not sep or not path:
            raise ValueError(f"training source {spec!r} must be FORMAT:PATH, FORMAT:PATH:Type1,Type2 or FORMAT:PATH:Type1,Type2:N")
        names = tuple(t.strip() for t in types.split(",") if t.strip())
        return cls(fmt, path, names or None, documents)


@dataclass(frozen=True)
class Example:
    """One training sequence: prompt ids then answer ids (ending with the turn-end token)."""

    key: str
    """``source_index:sentence_key``."""
    input_ids: tuple[int, ...]
    prompt_length: int
    target: str
    """The rendered gold answer (without the end token)."""
    prefix_length: int = 0
    """Leading tokens shared by every example with the same type list (the instruction); the
    training step computes them once per batch."""

    @property
    def prefix(self) -> tuple[int, ...]:
        """The shared instruction tokens (batches never mix two prefixes)."""
        return self.input_ids[: self.prefix_length]

    @property
    def suffix_length(self) -> int:
        """Tokens after the shared prefix: sentence, template tail and answer."""
        return len(self.input_ids) - self.prefix_length

    @property
    def labels(self) -> list[int]:
        """``-100`` over the prompt, the token ids over the answer."""
        return [IGNORE] * self.prompt_length + list(self.input_ids[self.prompt_length :])


def answer_end_id(tokenizer) -> int:
    """The token the chat template closes an assistant turn with (``<|im_end|>`` for ChatML).

    It must be one of the ids engines stop on (``end_token_ids``), else the trained model would
    never stop; when the template shows no such token the tokenizer's EOS is used.
    """
    stops = set(end_token_ids(tokenizer))
    chat = [*messages([], ""), {"role": "assistant", "content": _MARK}]
    try:
        text = tokenizer.apply_chat_template(chat, tokenize=False)
    except Exception as err:  # templates raise their own error types for unexpected roles
        raise ValueError(f"the chat template cannot render an assistant turn: {err}") from err
    after = text.partition(_MARK)[2]
    ids = tokenizer.encode(after, add_special_tokens=False) if after else []
    if ids and ids[0] in stops:
        return ids[0]
    if isinstance(tokenizer.eos_token_id, int):
        return tokenizer.eos_token_id
    raise ValueError("cannot tell which token ends an answer: the template closes none and there is no EOS")


def source_examples(
    index: int, source: TrainSource, tokenizer: Tokenizer, max_length: int, end_id: int, types_file: str | None,
    dense: tuple[dict[str, list[str]], int, int] | None = None, fmt: str = DEFAULT_FORMAT,
) -> tuple[list[Example], dict]:
    """Examples of one source with answers in format ``fmt``, and its report; ``dense`` (lexicon
    names by type, names per sample, seed) adds one VANER sample per sentence example
    (``bulkner.training.lexicon.dense_samples``)."""
    answer = answer_format(fmt)
    corpus = read_corpus(source.fmt, source.path)
    gold = list(corpus.documents[: source.documents] if source.documents else corpus.documents)
    names = list(source.types) if source.types else sorted(corpus.type_counts())
    types = resolve_types(names, types_file)
    sentences, rejects = segment([g.document for g in gold], MAX_SENTENCE_CHARS)
    placed = sentence_gold(sentences, gold, names, answer.crossing)
    targets = {s.key: answer.render(s.text, placed.spans[s.key], names) for s in sentences}
    builder = PromptBuilder(types, tokenizer, max_length, fmt)
    examples: list[Example] = []
    too_long = len(rejects)
    pairs = [(sentence, targets[sentence.key]) for sentence in sentences]
    if dense is not None:
        lexicon, per_sample, seed = dense
        samples = dense_samples(lexicon, names, len(sentences), per_sample, seed + index)
        pairs += [(sentence, answer.render(sentence.text, spans, names)) for sentence, spans in samples]
    for sentence, target in pairs:
        prompt = builder.build(sentence)
        answer = tokenizer.encode(target, add_special_tokens=False) + [end_id]
        if prompt is None or len(prompt.token_ids) + len(answer) > max_length:
            too_long += 1
            continue
        ids = prompt.token_ids + tuple(answer)
        examples.append(Example(f"{index}:{sentence.key}", ids, len(prompt.token_ids), target, len(builder.prefix_ids)))
    report = {
        "format": source.fmt,
        "path": str(source.path),
        "types": names,
        "documents": len(gold),
        "sentences": len(sentences) + len(rejects),
        "examples": len(examples),
        "dense_examples": len(pairs) - len(sentences) if dense is not None else 0,
        "skipped_too_long": too_long,
        "cut_mentions": len(placed.cut),
        "other_type_mentions": placed.other_types,
        "crossing_dropped": len(placed.crossing),
        "corpus_problems": dict(corpus.problem_counts()),
    }
    logger.info("source %d (%s %s): %s", index, source.fmt, source.path, report)
    return examples, report


def build_examples(
    sources: Sequence[TrainSource], tokenizer: Tokenizer, max_length: int, types_file: str | Path | None = None,
    dense_lexicon: str | Path | None = None, dense_names: int = 6, seed: int = 0, fmt: str = DEFAULT_FORMAT,
) -> tuple[list[Example], dict]:
    """All sources' examples in source order, and ``{"sources": [report per source], totals}``;
    with ``dense_lexicon``, each source's VANER dense samples after its sentences.

    ``types_file`` (JSON ``{"Name": "definition"}``) defines types that are not presets, e.g.
    CMeEE's codes. Raises ``ValueError`` for an unknown format, a missing path or an unknown type.
    """
    if not sources:
        raise ValueError("no training sources given")
    if max_length < 64:
        raise ValueError(f"max_length must be >= 64, got {max_length}")
    end_id = answer_end_id(tokenizer)
    dense = (read_lexicon(dense_lexicon), dense_names, seed) if dense_lexicon else None
    examples: list[Example] = []
    reports = []
    for index, source in enumerate(sources):
        found, report = source_examples(index, source, tokenizer, max_length, end_id,
                                        str(types_file) if types_file else None, dense, fmt)
        examples.extend(found)
        reports.append(report)
    totals = {k: sum(r[k] for r in reports) for k in ("documents", "sentences", "examples", "skipped_too_long", "cut_mentions")}
    return examples, {"sources": reports, "end_token_id": end_id, "answer_format": answer_format(fmt).id, **totals}


def split_eval(examples: Sequence[Example], fraction: float | None, seed: int) -> tuple[list[Example], list[Example]]:
    """Train and eval examples: a seeded random ``fraction`` held out (at least one), order kept."""
    if not fraction:
        return list(examples), []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = set(order[: max(1, round(fraction * len(examples)))])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def batch_plan(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
    groups: Sequence[object] | None = None, max_tokens: int | None = None,
) -> list[list[int]]:
    """Length-grouped batches of example indices for one epoch: a pure function of its arguments.

    Indices are shuffled and cut into windows of ``64 * batch_size``; inside a window, examples
    are split by ``groups`` (a batch never mixes two groups: the training step shares one prompt
    prefix per batch), sorted by length and packed into batches of at most ``batch_size`` rows
    and at most ``max_tokens`` padded tokens (rows times the longest length; a single longer
    example is a batch of its own). The batch order is shuffled again.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = 64 * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        by_group: dict[object, list[int]] = defaultdict(list)
        for i in order[start : start + window]:
            by_group[groups[i] if groups is not None else None].append(i)
        for members in by_group.values():
            batch: list[int] = []
            for i in sorted(members, key=lambda i: -lengths[i]):  # longest first: row 0 sets the width
                if batch and (len(batch) == batch_size or (max_tokens and (len(batch) + 1) * lengths[batch[0]] > max_tokens)):
                    batches.append(batch)
                    batch = []
                batch.append(i)
            if batch:
                batches.append(batch)
    rng.shuffle(batches)
    return batches


def collate(examples: Sequence[Example], pad_id: int) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (``-100`` on prompt and padding)."""
    width = max(len(e.input_ids) for e in examples)
    ids, mask, labels = [], [], []
    for e in examples:
        pad = width - len(e.input_ids)
        ids.append(list(e.input_ids) + [pad_id] * pad)
        mask.append([1] * len(e.input_ids) + [0] * pad)
        labels.append(e.labels + [IGNORE] * pad)
    return ids, mask, labels
