"""The typed-bracket answer format: one copy of the sentence, each entity as ``[Type text]``.

::

    Activation of the [Gene [Gene CD28] surface receptor] in [Species human] [CellType T cells]

An opening bracket is followed by the type's label and one space; the label is the type name
with spaces written as ``_`` (a label holds no space, so the first space ends it). Spans nest
(``[Gene [Gene CD28] surface receptor]``), also across types, and one span may carry two types
(``[Gene [Disease X]]``, in the type list's order). Spans that cross (overlap without nesting)
cannot be written, whatever their types: :func:`render` raises ``ValueError`` and the gold side
resolves them with ``resolve_crossing(..., across_types=True)``. A sentence without entities is
:data:`~bulkner.tagging.format.NO_ENTITIES`. Source brackets are written as parentheses,
backslashes and line breaks escaped, as in the block format (:func:`~bulkner.tagging.format.escape`).

Parsing de-brackets the answer into plain text, aligns it to the sentence and maps every mention
through the alignment exactly as the block parser does (``parse.place_mention``): a mention is
placed exactly or rejected, never misplaced. An unknown label is the mention's first word, not a
type: the mention is rejected (``unknown_type``) and its text kept for the alignment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from bulkner.schema import Reject, Span
from bulkner.tagging.format import NO_ENTITIES, UNESCAPES, WORD_RE, escape, resolve_crossing, word_char, writing_order
from bulkner.tagging.parse import _TOKEN_RE, ParseResult, Types, _reject, label_index, no_answer, normalize_label, place_mentions


def label_of(type_: str) -> str:
    """The label written after ``[``: the type name with spaces as ``_``."""
    return type_.replace(" ", "_")


def render(sentence: str, spans: Iterable[Span], types: Sequence[str] | None = None) -> str:
    """``sentence`` with every span written as ``[Label text]`` (see the module docstring).

    ``types`` orders two types on one span (outer first) and must hold every span's type (None:
    any type). Raises ``ValueError`` for invalid or crossing spans and unknown types.
    """
    ordered = writing_order(sentence, spans, types)
    if not ordered:
        return NO_ENTITIES
    if len(kept := resolve_crossing(ordered, across_types=True)) != len(ordered):
        shown = ", ".join(str(tuple(s)) for s in sorted(set(ordered) - set(kept))[:5])
        raise ValueError(f"spans cross and cannot be written with typed brackets: {shown}")
    parts, stack, pos = [], [], 0
    for span in ordered:
        while stack and stack[-1].end <= span.start:
            pos = _close(parts, sentence, pos, stack.pop())
        parts.append(escape(sentence[pos : span.start]) + f"[{label_of(span.type)} ")
        pos = span.start
        stack.append(span)
    while stack:
        pos = _close(parts, sentence, pos, stack.pop())
    parts.append(escape(sentence[pos:]))
    return "".join(parts)


def resume(sentence: str, spans: Iterable[Span], start: int, end: int, types: Sequence[str] | None = None) -> tuple[str, str | None]:
    """For a generator that writes only ``sentence[start:end]`` of the answer (``--generate
    window``; ``start`` and ``end`` at whitespace or the sentence's ends, ``spans``: the entities
    known outside the window): the answer's head, ``sentence[:start]`` with the spans that end by
    ``start`` in brackets, for the prompt to end with; and the stop text, the source's words after
    ``end`` as the answer copies them, the fewest that cannot occur in the answer before ``end``,
    cut where a known span starts inside them (the answer writes a bracket there); None when only
    whitespace follows or no such text exists. A window that starts at 0 has an empty head."""
    spans = list(spans)
    before = [s for s in spans if s.end <= start]
    head = render(sentence[:start], before, types) if before else escape(sentence[:start])
    plain, rest = sentence[start:end], sentence[end:]
    written = escape(plain)
    opens = [m.start() for m in WORD_RE.finditer(plain)]
    lead = len(rest) - len(rest.lstrip())
    limit = min((s.start - end for s in spans if s.start > end + lead), default=len(rest))
    for word in re.finditer(r"\S+", rest):
        stop = escape(rest[: min(word.end(), limit)])
        body = rest[lead : min(word.end(), limit)]  # "[Gene " + body holds the stop too, where an entity starts with it
        if stop not in (written + stop)[:-1] and not any(plain.startswith(body, at) for at in opens):
            return head, stop
        if word.end() >= limit:
            break
    return head, None


def until_stop(generated: str, stop: str | None) -> str:
    """The part of a resumed answer that covers its window: ``generated`` up to the first ``stop``
    (all of it when ``stop`` is None or absent). A bracket still open there holds an entity that
    goes on past the window (``[Species Zea`` before the stop `` mays``, or ``[Gene`` whose label's
    space begins the stop `` sodium``): its opening and label are left out, and the classifier
    decides past the window."""
    if stop is None or stop not in generated:
        return generated
    tokens = _TOKEN_RE.findall(generated[: generated.index(stop)])
    open_at: list[int] = []
    for k, token in enumerate(tokens):
        if token == "[":
            open_at.append(k)
        elif token == "]" and open_at:
            open_at.pop()
    for k in open_at:
        tokens[k] = ""
        if k + 1 < len(tokens) and tokens[k + 1] not in ("[", "]") and not tokens[k + 1].startswith("\\"):
            tokens[k + 1] = tokens[k + 1].partition(" ")[2]
    return "".join(tokens).rstrip()


def _close(parts: list[str], sentence: str, pos: int, span: Span) -> int:
    """Write the text up to ``span``'s end and its closing bracket; the new position."""
    parts.append(escape(sentence[pos : span.end]) + "]")
    return span.end


def parse(output: str, sentence: str, types: Types) -> ParseResult:
    """Spans of the typed-bracket answer ``output`` for ``sentence``; ``types`` as ``parse.parse``."""
    if (nothing := no_answer(output)) is not None:
        return nothing
    plain, mentions, rejects, _ = scan(output, label_index(types))
    spans, problems = place_mentions(plain, mentions, sentence)
    return ParseResult(sorted(set(spans), key=lambda s: (s.start, -s.end, s.type)), rejects + problems)


def forced_spans(output: str, sentence: str, types: Types, forced: Sequence[tuple[int, int]]) -> set[Span]:
    """The spans of ``output`` (as :func:`parse` gives them) that text a constraint ``forced`` on
    the model (``[start, end)`` ranges of ``output``, ``Generation.forced``) touches: written
    anywhere from the mention's opening bracket to its closing one, both included. A span that
    an untouched mention also gives is the model's own."""
    if not forced or no_answer(output) is not None:
        return set()
    plain, mentions, _, marks = scan(output, label_index(types))
    touched = [any(a < close and opened < b for a, b in forced) for opened, close in marks]
    placed = {flag: set(place_mentions(plain, [m for m, t in zip(mentions, touched) if t == flag], sentence)[0]) for flag in (True, False)}
    return placed[True] - placed[False]


def scan(body: str, index: Mapping[str, str]) -> tuple[str, list[tuple[int, int, str]], list[Reject], list[tuple[int, int]]]:
    """De-bracket and unescape ``body``: plain text, ``(start, end, type)`` mentions in it, rejects,
    and each mention's ``[opening bracket, closing bracket + 1)`` range in ``body``."""
    parts: list[str] = []
    length, stack, mentions, rejects, marks = 0, [], [], [], []
    labelling = False  # the text right after "[" starts with the label
    for found in _TOKEN_RE.finditer(body):
        token = found.group()
        if token == "[":
            stack.append([length, None, found.start()])  # its type comes with the label
            labelling = True
            continue
        if token == "]":
            if not stack:
                rejects.append(_reject("unbalanced_brackets", body, f"']' without '[' at {length}"))
            else:
                start, type_, opened = stack.pop()
                if type_ is None:
                    rejects.append(_reject("unknown_type", "".join(parts)[start:], "'[' not followed by a known label and a space"))
                else:
                    mentions.append((start, length, type_))
                    marks.append((opened, found.end()))
            labelling = False
            continue
        text = UNESCAPES[token[1]] if len(token) == 2 and token[0] == "\\" else token
        if labelling:
            labelling = False
            label, space, rest = text.partition(" ")
            type_ = index.get(normalize_label(label)) if space and token[0] != "\\" else None
            if type_ is not None:
                stack[-1][1], text = type_, rest
        parts.append(text)
        length += len(text)
    plain = "".join(parts)
    rejects += [_reject("unbalanced_brackets", plain[s:], f"'[' at {s} never closed") for s, _, _ in stack]
    return plain, mentions, rejects, marks


MAX_DEPTH = 4
"""Most brackets a constrained answer may hold open at once (gold answers nest at most 3 deep)."""

Move = tuple[int, tuple]
"""One byte the answer may write next and the automaton state after it."""


class Grammar:
    """Every typed-bracket answer for one sentence, as a byte automaton (constrained decoding).

    The answer copies ``escape(sentence)`` byte for byte. Where a source character starts (never
    inside an escape pair or a UTF-8 sequence), unless it and the one before are both letters or
    digits, it may open ``[`` followed by a label and a space, or close ``]`` a bracket that holds
    more than whitespace (the parser strips a mention's whitespace); it ends at the end of the copy
    with every bracket closed. The other answer is :data:`NO_ENTITIES`. This is what :func:`render`
    writes and :func:`scan` reads, but for brackets inside a run of letters and digits: a model
    pushed off its copy wrote one bracket per character there (BioRED dev), and 6 of the
    2,907 BioRED development mentions start or end inside a word. The tests check that every
    other gold answer is accepted. States are small tuples: ``("text", position,
    depth, empty)`` (empty: the innermost open bracket holds only whitespace so far),
    ``("label", position, depth, label bytes written)`` and ``("none", bytes written)``.
    """

    def __init__(self, sentence: str, types: Sequence[str]) -> None:
        self.text = b""
        """``escape(sentence)`` in UTF-8."""
        self.boundary: list[bool] = []
        """Per byte position (and the end): a source character starts here, not inside a word, so
        a bracket may go here."""
        self.blank: list[bool] = []
        """Per byte: it writes whitespace."""
        for at, char in enumerate(sentence):
            piece = escape(char).encode("utf-8")
            inside_word = at > 0 and word_char(char) and word_char(sentence[at - 1])
            self.boundary += [not inside_word] + [False] * (len(piece) - 1)
            self.blank += [char.isspace()] * len(piece)
            self.text += piece
        self.boundary.append(True)
        self.blank_rest = [True] * (len(self.text) + 1)
        """Per byte position: only whitespace follows (a bracket opened there could never close)."""
        for at in range(len(self.text) - 1, -1, -1):
            self.blank_rest[at] = self.blank[at] and self.blank_rest[at + 1]
        self.labels = [f"{label_of(t)} ".encode("utf-8") for t in types]
        self.none = NO_ENTITIES.encode("utf-8")

    def start(self) -> frozenset:
        return frozenset({("text", 0, 0, False), ("none", 0)})

    def final(self, state: tuple) -> bool:
        return state == ("text", len(self.text), 0, False) or state == ("none", len(self.none))

    def moves(self, state: tuple) -> list[Move]:
        """The bytes allowed after ``state``, each with the state it leads to."""
        kind, at = state[0], state[1]
        if kind == "none":
            return [(self.none[at], ("none", at + 1))] if at < len(self.none) else []
        depth = state[2]
        if kind == "label":
            written = state[3]
            done = len(written) + 1
            return sorted({(label[len(written)], ("text", at, depth + 1, True) if len(label) == done else ("label", at, depth, label[:done]))
                           for label in self.labels if len(label) > len(written) and label.startswith(written)})
        empty = state[3]
        moves: list[Move] = []
        if at < len(self.text):
            moves.append((self.text[at], ("text", at + 1, depth, empty and self.blank[at])))
            if self.boundary[at] and depth < MAX_DEPTH and not self.blank_rest[at]:
                moves.append((ord("["), ("label", at, depth, b"")))
        if depth and not empty and self.boundary[at]:
            moves.append((ord("]"), ("text", at, depth - 1, False)))
        return moves
