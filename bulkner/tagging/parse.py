"""Parse LLMNER-tagged model output back into character spans of the source sentence.

The output is split into lines; a line ``label: text`` is a block (labels are normalised:
case, ``_``/space/``-``/``/`` and ``*``/``-``/``#`` bullets do not matter, ``:`` or ``：``, any
spacing). Inside a block a stack parser turns ``[``/``]`` into mentions over the de-bracketed,
unescaped text (escapes as in :mod:`bulkner.tagging.format`). That text is aligned to the source
sentence (identity when equal, else common prefix/suffix plus ``difflib`` character matching in
between) and each mention is mapped through the alignment. A mention is kept only if both
boundary characters lie in matched regions and the source text between them equals the mention
text up to whitespace; otherwise it is rejected as ``unaligned_span`` — never misplaced.

Reject reasons (stage ``parse``): ``no_blocks``, ``stray_text``, ``unknown_type``,
``unbalanced_brackets``, ``empty_mention``, ``unaligned_span``.
"""

from __future__ import annotations

import logging
import re
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from bulkner.schema import Reject, Span
from bulkner.tagging.format import NO_ENTITIES, UNESCAPES, source_view

logger = logging.getLogger(__name__)

STAGE = "parse"
EXCERPT = 200
_LINE_RE = re.compile(r"(?P<label>[^:：\[\]\\\n]{1,80})[:：](?P<rest>.*)", re.S)
_LABEL_NOISE_RE = re.compile(r"[\s_\-/*•#>]+")
_LABEL_SHAPE_RE = re.compile(r"[\w .()'+&,]+")
_TOKEN_RE = re.compile(r"\\[\\\[\]nr]|\[|\]|[^\\\[\]]+|\\")
_SPACE_RE = re.compile(r"\s+")

Types = Sequence[str] | Mapping[str, Sequence[str]]
Block = tuple[int, int, int]
"""An alignment block ``(a, b, size)``: ``plain[a:a+size] == sentence[b:b+size]``."""


@dataclass(frozen=True)
class ParseResult:
    """Spans found in one model output and the problems met on the way."""

    spans: list[Span]
    """Sorted by (start, -end, type), deduplicated, offsets into the sentence."""
    rejects: list[Reject]
    """Stage ``parse``; record is the block, line or mention text (truncated)."""


def parse(output: str, sentence: str, types: Types) -> ParseResult:
    """Parse ``output`` (tagged model text for ``sentence``) into spans of the given ``types``.

    ``types`` is a list of type names or a mapping type → aliases; labels are matched after
    :func:`normalize_label`. ``"None"`` and empty output mean no entities.
    """
    if (nothing := no_answer(output)) is not None:
        return nothing
    blocks, rejects = split_blocks(output, label_index(types))
    spans: set[Span] = set()
    for type_, body in blocks:
        found, problems = parse_block(body, sentence, type_)
        spans.update(found)
        rejects.extend(problems)
    return ParseResult(sorted(spans, key=lambda s: (s.start, -s.end, s.type)), rejects)


def no_answer(output: object) -> ParseResult | None:
    """The result of an output with nothing to parse (not a string, empty, ``None``); None otherwise."""
    if not isinstance(output, str):
        return ParseResult([], [_reject("no_blocks", repr(output), "output is not a string")])
    return ParseResult([], []) if output.strip() in ("", NO_ENTITIES) else None


def normalize_label(label: str) -> str:
    """Case-fold and unify separators: ``Gene/Protein``, ``gene_protein``, ``- GENE PROTEIN``."""
    return _LABEL_NOISE_RE.sub(" ", label.casefold()).strip()


def label_index(types: Types) -> dict[str, str]:
    """Map normalised labels (type names and aliases) to type names; ambiguity is a ValueError."""
    pairs = types.items() if isinstance(types, Mapping) else ((t, ()) for t in types)
    index: dict[str, str] = {}
    for type_, aliases in pairs:
        names = (type_, aliases) if isinstance(aliases, str) else (type_, *aliases)
        for name in names:
            key = normalize_label(name)
            if not key or index.get(key, type_) != type_:
                raise ValueError(f"label {name!r} of type {type_!r} is empty or ambiguous")
            index[key] = type_
    return index


def split_blocks(output: str, index: Mapping[str, str]) -> tuple[list[tuple[str, str]], list[Reject]]:
    """Split output into ``(type, block text)`` pairs; unusable lines become rejects."""
    blocks, rejects, labelled = [], [], False
    for line in output.split("\n"):
        kind, value, body = classify_line(_trim_line(line), index)
        labelled |= kind in ("block", "unknown_type")
        if kind == "block":
            blocks.append((value, body))
        elif kind != "skip":
            rejects.append(_reject(kind, value, "line is not a block of a requested type"))
    if not labelled:
        return [], [_reject("no_blocks", output, "no line of the form 'label: text'")]
    return blocks, rejects


def classify_line(line: str, index: Mapping[str, str]) -> tuple[str, str, str]:
    """``("block", type, body)``, ``("unknown_type"|"stray_text", line, "")`` or ``("skip", ...)``."""
    if line.strip() in ("", NO_ENTITIES):
        return "skip", line, ""
    match = _LINE_RE.match(line)
    if match is None:
        return "stray_text", line, ""
    key, rest = normalize_label(match["label"]), match["rest"]
    if key in index:
        return "block", index[key], _trim_body(rest)
    if _LABEL_SHAPE_RE.fullmatch(key) and rest.strip():
        return "unknown_type", line, ""
    return "stray_text", line, ""


def _trim_line(line: str) -> str:
    """Drop a trailing CR and the two spaces of the block separator."""
    line = line.removesuffix("\r")
    return line[:-2] if line.endswith("  ") else line


def _trim_body(rest: str) -> str:
    """Drop the (up to two) spaces after the label's colon."""
    return rest[2:] if rest.startswith("  ") else rest.removeprefix(" ")


def parse_block(body: str, sentence: str, type_: str) -> tuple[list[Span], list[Reject]]:
    """Spans of one block, aligned to ``sentence``, and the block's rejects."""
    if body.strip() == NO_ENTITIES:
        return [], []
    plain, mentions, rejects = scan_brackets(body)
    spans, problems = place_mentions(plain, [(start, end, type_) for start, end in mentions], sentence)
    return spans, rejects + problems


def place_mentions(plain: str, mentions: Sequence[tuple[int, int, str]], sentence: str) -> tuple[list[Span], list[Reject]]:
    """Map ``(start, end, type)`` mentions of ``plain`` (the de-bracketed answer) to sentence spans
    through one alignment; those that cannot be placed exactly are rejects. Both are aligned as
    the model sees them (``format.source_view``: source brackets as parentheses, offsets kept)."""
    plain, sentence = source_view(plain), source_view(sentence)
    blocks = align(plain, sentence) if mentions else []
    spans, rejects = [], []
    for start, end, type_ in mentions:
        span, reject = place_mention(plain, start, end, sentence, blocks, type_)
        spans.extend([span] if span else [])
        rejects.extend([reject] if reject else [])
    return spans, rejects


def scan_brackets(body: str) -> tuple[str, list[tuple[int, int]], list[Reject]]:
    """De-bracket and unescape ``body``: plain text, mention offsets into it, bracket rejects."""
    parts: list[str] = []
    length, stack, mentions, rejects = 0, [], [], []
    for token in _TOKEN_RE.findall(body):
        if token == "[":
            stack.append(length)
        elif token == "]" and stack:
            mentions.append((stack.pop(), length))
        elif token == "]":
            rejects.append(_reject("unbalanced_brackets", body, f"']' without '[' at {length}"))
        else:
            text = UNESCAPES[token[1]] if len(token) == 2 and token[0] == "\\" else token
            parts.append(text)
            length += len(text)
    plain = "".join(parts)
    rejects += [_reject("unbalanced_brackets", plain[s:], f"'[' at {s} never closed") for s in stack]
    return plain, mentions, rejects


def place_mention(
    plain: str, start: int, end: int, sentence: str, blocks: Sequence[Block], type_: str
) -> tuple[Span | None, Reject | None]:
    """Map mention ``plain[start:end]`` to a sentence span, or say why it cannot be placed."""
    text = plain[start:end]
    start, end = start + len(text) - len(text.lstrip()), end - len(text) + len(text.rstrip())
    if start >= end:
        return None, _reject("empty_mention", plain, f"empty {type_} mention at {start}")
    first, last = map_offset(blocks, start), map_offset(blocks, end - 1)
    if first is None or last is None or first > last:
        return None, _reject("unaligned_span", plain[start:end], f"{type_} boundary not in the sentence")
    if _squash(sentence[first : last + 1]) != _squash(plain[start:end]):
        return None, _reject("unaligned_span", plain[start:end], f"{type_} text differs from the sentence")
    return Span(first, last + 1, type_), None


def align(plain: str, sentence: str) -> list[Block]:
    """Matching blocks of ``plain`` against ``sentence``, increasing in both, sizes > 0."""
    if plain == sentence:
        return [(0, 0, len(plain))]
    head = _common_prefix(plain, sentence)
    tail = _common_prefix(plain[head:][::-1], sentence[head:][::-1])
    middle_a, middle_b = plain[head : len(plain) - tail], sentence[head : len(sentence) - tail]
    blocks = [(0, 0, head)]
    if middle_a and middle_b:
        matcher = SequenceMatcher(None, middle_a, middle_b, autojunk=False)
        blocks += [(a + head, b + head, n) for a, b, n in matcher.get_matching_blocks()]
    blocks.append((len(plain) - tail, len(sentence) - tail, tail))
    return [block for block in blocks if block[2]]


def map_offset(blocks: Sequence[Block], index: int) -> int | None:
    """The sentence offset of ``plain[index]``, or None if it is not in a matched block."""
    pos = bisect_right(blocks, index, key=lambda block: block[0]) - 1
    if pos < 0:
        return None
    a, b, size = blocks[pos]
    return b + index - a if index < a + size else None


def _common_prefix(a: str, b: str) -> int:
    """Length of the common prefix of ``a`` and ``b`` (binary search over C-level compares)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


def _squash(text: str) -> str:
    """Text without whitespace, for boundary checks that tolerate spacing changes."""
    return _SPACE_RE.sub("", text)


def _reject(reason: str, record: str, detail: str) -> Reject:
    """A parse-stage reject with the record cut to an excerpt."""
    return Reject(stage=STAGE, reason=reason, record=record[:EXCERPT], detail=detail)
