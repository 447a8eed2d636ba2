"""Render a sentence and its entity spans in LLMNER's symbolic tagging format.

The target text is one block per entity type that has at least one entity, in the order of the
given type list::

    protein:  Activation of the [[CD28] surface receptor] provides ... ( [IL-2] ) ...  \\n
    cell_type:  In [primary T lymphocytes] we show ...

A block is ``f"{label}:  {tagged}"`` (label, ASCII colon, two spaces, then the whole sentence with
every entity of that type wrapped in ``[`` ``]``); blocks are joined by ``"  \\n"`` with no
trailing separator. A sentence without entities renders as :data:`NO_ENTITIES` (``"None"``).

Overlap policy: entities of one type may nest (nested brackets, ``[[CD28] surface receptor]``);
entities of different types may overlap freely (each type has its own block). Same-type spans
that *cross* (overlap without nesting) cannot be expressed: :func:`render` raises ``ValueError``
naming them, and :func:`resolve_crossing` offers the ``keep_longer`` policy for preparing
training data. Identical duplicate spans collapse to one; zero-length spans are an error.

Source brackets: the model reads and copies a sentence's square brackets as parentheses
(:func:`source_view`: the same length, so every offset holds), so an answer's brackets are only the
format's: ``[3H]thymidine`` renders as ``(3H)thymidine``, the prompt shows it so too, and the
parsers align answers to the viewed sentence. (Escaping them, ``\\[3H\\]``, as before, left the
model to write a backslash it ranks 22nd to 493rd: ``scripts/constrained_forcing.py``.)
Backslashes and line breaks are escaped with a backslash, ``\\`` → ``\\\\``, newline → ``\\n``,
carriage return → ``\\r`` (the block parser splits on newlines; LLMNER's data has none inside a
sentence). ``unescape(escape(t)) == source_view(t)`` for every string; :func:`unescape` still reads
``\\[`` and ``\\]`` as brackets of the source, and keeps a backslash that starts no pair, as models
sometimes emit one.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from bulkner.schema import Span

logger = logging.getLogger(__name__)

NO_ENTITIES = "None"
"""The whole output for a sentence without entities."""
BLOCK_SEPARATOR = "  \n"
LABEL_SEPARATOR = ":  "
UNESCAPES = {"\\": "\\", "[": "[", "]": "]", "n": "\n", "r": "\r"}
"""Character after a backslash → the source character it stands for."""

_ESCAPE_TABLE = str.maketrans({"\\": "\\\\", "[": "(", "]": ")", "\n": "\\n", "\r": "\\r"})
_SOURCE_BRACKETS = str.maketrans("[]", "()")
_UNESCAPE_RE = re.compile(r"\\([\\\[\]nr])")
_BAD_LABEL_CHARS = set(":：[]\\\n\r")


WORD_RE = re.compile(r"\w+|[^\w\s]")
"""Words and single punctuation marks: where a mention may start and end (the span selector scores
the spans between them; a window's stop text must not start one)."""


def word_char(char: str) -> bool:
    """Whether ``char`` belongs to a word of :data:`WORD_RE` (``\\w``: what ``str.isalnum`` accepts,
    and the underscore), so that no mention starts or ends between two of them."""
    return char.isalnum() or char == "_"


def source_view(text: str) -> str:
    """``text`` as the model reads and copies it: square brackets as parentheses (same length)."""
    return text.translate(_SOURCE_BRACKETS)


def escape(text: str) -> str:
    """Source text as an answer copies it: :func:`source_view`, backslashes and line breaks escaped;
    it holds no ``[``, ``]`` or line break."""
    return text.translate(_ESCAPE_TABLE)


def unescape(text: str) -> str:
    """Invert :func:`escape`; a backslash that starts no escape pair is kept as is."""
    return _UNESCAPE_RE.sub(lambda m: UNESCAPES[m.group(1)], text)


def check_spans(sentence: str, spans: Iterable[Span]) -> list[Span]:
    """Validate spans against ``sentence``; return them deduplicated in (start, -end, type) order."""
    unique = set()
    for span in spans:
        start, end, type_ = span
        if not 0 <= start < end <= len(sentence):
            raise ValueError(
                f"span {tuple(span)!r} is empty or outside the sentence (length {len(sentence)})"
            )
        if not type_:
            raise ValueError(f"span {tuple(span)!r} has an empty type")
        unique.add(Span(start, end, type_))
    return sorted(unique, key=lambda s: (s.start, -s.end, s.type))


def find_crossing(spans: Sequence[Span]) -> list[tuple[Span, Span]]:
    """Pairs of same-type spans that overlap without nesting (spans as :func:`check_spans` gives)."""
    pairs = []
    for type_ in dict.fromkeys(s.type for s in spans):
        stack: list[Span] = []
        for span in (s for s in spans if s.type == type_):
            while stack and stack[-1].end <= span.start:
                stack.pop()
            pairs.extend((open_, span) for open_ in stack if open_.end < span.end)
            stack.append(span)
    return pairs


def resolve_crossing(spans: Iterable[Span], across_types: bool = False) -> list[Span]:
    """Drop spans that cross a longer one of the same type, or of any type with ``across_types``
    (policy ``keep_longer``; ties: earlier wins).

    Returns the kept spans deduplicated in (start, -end, type) order.
    """
    kept: list[Span] = []
    for span in sorted(set(spans), key=lambda s: (s.start - s.end, s.start, s.type)):
        if not any(_crosses(span, other) for other in kept if across_types or other.type == span.type):
            kept.append(span)
    return sorted(kept, key=lambda s: (s.start, -s.end, s.type))


def _crosses(a: Span, b: Span) -> bool:
    """True if ``a`` and ``b`` overlap and neither contains the other."""
    return a.start < b.end and b.start < a.end and not (
        (a.start <= b.start and b.end <= a.end) or (b.start <= a.start and a.end <= b.end)
    )


def tag_sentence(sentence: str, spans: Iterable[Span]) -> str:
    """The escaped sentence with each span bracketed; spans must not cross (types are ignored)."""
    spans = list(spans)
    opens, closes = Counter(s.start for s in spans), Counter(s.end for s in spans)
    parts, prev = [], 0
    for pos in sorted(set(opens) | set(closes)):
        parts.append(escape(sentence[prev:pos]))
        parts.append("]" * closes[pos] + "[" * opens[pos])
        prev = pos
    parts.append(escape(sentence[prev:]))
    return "".join(parts)


def check_types(spans: Iterable[Span], types: Sequence[str] | None) -> None:
    """Raise ``ValueError`` when a span's type is not in ``types`` (None: any type goes)."""
    unknown = sorted({s.type for s in spans} - set(types)) if types is not None else []
    if unknown:
        raise ValueError(f"span types {unknown} are not in the type list {list(types)}")


def writing_order(sentence: str, spans: Iterable[Span], types: Sequence[str] | None) -> list[Span]:
    """``spans`` checked (:func:`check_spans`, :func:`check_types`), deduplicated and in the order a
    one-copy format writes them: by start, longer first, then the type list's order."""
    checked = check_spans(sentence, spans)
    check_types(checked, types)
    order = {t: i for i, t in enumerate(types)} if types is not None else {}
    return sorted(checked, key=lambda s: (s.start, -s.end, order.get(s.type, 0), s.type))


def block_types(spans: Sequence[Span], types: Sequence[str] | None) -> list[str]:
    """Types that get a block, in output order; ``None`` orders them by first occurrence."""
    check_types(spans, types)
    present = list(dict.fromkeys(s.type for s in spans))
    return present if types is None else [t for t in types if t in set(present)]


def render(
    sentence: str,
    spans: Iterable[Span],
    types: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """Render ``sentence`` with ``spans`` as LLMNER target text (see the module docstring).

    ``types`` gives the block order (spans of other types raise ``ValueError``); ``None`` orders
    blocks by first occurrence. ``labels`` maps a type to the label written for it (default: the
    type itself). Raises ``ValueError`` for invalid spans, bad labels and crossing same-type spans.
    """
    checked = check_spans(sentence, spans)
    crossing = find_crossing(checked)
    if crossing:
        shown = ", ".join(f"{tuple(a)}×{tuple(b)}" for a, b in crossing[:5])
        raise ValueError(f"{len(crossing)} crossing same-type span pair(s) cannot be rendered: {shown}")
    blocks = []
    for type_ in block_types(checked, types):
        label = _label(type_, labels)
        tagged = tag_sentence(sentence, [s for s in checked if s.type == type_])
        blocks.append(f"{label}{LABEL_SEPARATOR}{tagged}")
    return BLOCK_SEPARATOR.join(blocks) if blocks else NO_ENTITIES


def _label(type_: str, labels: Mapping[str, str] | None) -> str:
    """The label for ``type_``; raises ``ValueError`` if it would break the block syntax."""
    label = labels.get(type_, type_) if labels else type_
    if not label.strip() or _BAD_LABEL_CHARS & set(label):
        raise ValueError(f"label {label!r} for type {type_!r} is empty or contains one of : ： [ ] \\ or a line break")
    return label
