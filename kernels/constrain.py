"""Decoding that stays on the source: at each step, only the tokens that keep the answer a valid
typed-bracket answer over its own sentence (``bulkner.tagging.inline.Grammar``).

The grammar is a byte automaton; this module lifts it to tokens. :class:`Vocabulary` holds every
token's bytes, sorted, once per tokenizer; :class:`Constraint` follows one answer: ``advance``
feeds it the tokens generated so far, ``allowed`` walks the automaton and the sorted vocabulary
together (a depth-first search that only enters byte strings some token starts with), so a step
costs a few dozen lookups, not one per vocabulary entry. The end-of-answer tokens are allowed
exactly when the automaton may stop. Every answer a constrained model writes parses without a
reject and maps back onto its sentence.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Callable, Iterable, Sequence

from bulkner.tagging.inline import Grammar

VERSION = "2"
"""Part of the fingerprint of a constrained run; changes whenever what the constraint allows or how
its answers are read changes (2: "inside a word" is ``WORD_RE``'s; the spans it forced on the model
are left to the selector)."""

VLLM_PROCESSOR = "bulkner.kernels.vllm_constraint:SourceConstraint"
"""The logits processor ``vllm.LLM(logits_processors=[...])`` is given (imports vLLM)."""
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character standing for each byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


def token_bytes(tokenizer) -> list[bytes | None]:
    """The bytes each token id writes (None for special and added tokens): byte-level BPE
    (GPT-2, SmolLM2, Llama 3) or SentencePiece (``▁`` for a space, ``<0xNN>`` byte tokens)."""
    vocab = tokenizer.get_vocab()
    pieces: list[bytes | None] = [None] * (max(vocab.values()) + 1)
    special = set(getattr(tokenizer, "all_special_ids", ())) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    decoder = _byte_decoder()
    byte_level = all(c in decoder for tok in list(vocab)[:2000] for c in tok if tok not in ("<unk>",))
    for tok, i in vocab.items():
        if i in special:
            continue
        if byte_level:
            if all(c in decoder for c in tok):
                pieces[i] = bytes(decoder[c] for c in tok)
        elif (m := _BYTE_TOKEN.fullmatch(tok)) is not None:
            pieces[i] = bytes([int(m.group(1), 16)])
        else:
            pieces[i] = tok.replace("▁", " ").encode("utf-8")
    return pieces


class Vocabulary:
    """A tokenizer's tokens by their bytes: sorted for prefix search, and the answer's end ids."""

    def __init__(self, pieces: Sequence[bytes | None], end_ids: Iterable[int]) -> None:
        by_bytes: dict[bytes, list[int]] = {}
        for i, piece in enumerate(pieces):
            if piece:
                by_bytes.setdefault(piece, []).append(i)
        self.ids = by_bytes
        self.sorted = sorted(by_bytes)
        self.pieces = list(pieces)
        self.end_ids = sorted(set(end_ids))
        self.longest = max(map(len, self.sorted))

    @classmethod
    def of(cls, tokenizer, end_ids: Iterable[int]) -> "Vocabulary":
        return cls(token_bytes(tokenizer), end_ids)

    def starts(self, prefix: bytes) -> bool:
        """Whether some token's bytes start with ``prefix``."""
        i = bisect.bisect_left(self.sorted, prefix)
        return i < len(self.sorted) and self.sorted[i].startswith(prefix)


class Constraint:
    """One answer under construction: the grammar's live states after the tokens seen so far.

    With a ``budget`` (the answer's ``max_tokens``, the end token included) the answer always fits
    it: a token is allowed only if, after it, the tokens left still cover copying the rest of the
    sentence with the longest tokens, closing what is open and the end token; that path itself is
    always allowed, so an answer is never cut with a bracket open.
    """

    def __init__(self, vocabulary: Vocabulary, grammar: Grammar, budget: int | None = None) -> None:
        self.vocabulary, self.grammar, self.budget = vocabulary, grammar, budget
        self.states = grammar.start()
        self.seen = 0
        """Tokens of the answer consumed (``advance`` takes the whole answer so far)."""
        self._copy: list[int] | None = None

    def advance(self, output_ids: Sequence[int]) -> None:
        """Consume the answer's tokens not yet seen; ``ValueError`` if one leaves the grammar."""
        for token in output_ids[self.seen :]:
            piece = self.vocabulary.pieces[token] if token < len(self.vocabulary.pieces) else None
            states = self._after(self.states, piece) if piece else frozenset()
            if not states and token not in self.vocabulary.end_ids:
                raise ValueError(f"token {token} ({piece!r}) leaves the answer grammar")
            self.states = states
        self.seen = len(output_ids)

    def _after(self, states: frozenset, piece: bytes) -> frozenset:
        for byte in piece:
            states = frozenset(nxt for state in states for b, nxt in self.grammar.moves(state) if b == byte)
            if not states:
                break
        return states

    def allowed(self) -> list[int]:
        """Token ids that keep the answer valid (and able to end within its budget), end ids
        included where it may stop."""
        left = None if self.budget is None else self.budget - self.seen - 1  # tokens after this one
        found: list[int] = []
        over: list[int] = []  # valid, but the answer could then not end within its budget
        stack = [(b"", self.states)]
        while stack:
            prefix, states = stack.pop()
            if prefix and prefix in self.vocabulary.ids:
                fits = left is None or any(self._fits(s, left) for s in states)
                (found if fits else over).extend(self.vocabulary.ids[prefix])
            if len(prefix) == self.vocabulary.longest:
                continue
            following: dict[int, set] = {}
            for state in states:
                for byte, nxt in self.grammar.moves(state):
                    following.setdefault(byte, set()).add(nxt)
            for byte, nxt in following.items():
                longer = prefix + bytes([byte])
                if self.vocabulary.starts(longer):
                    stack.append((longer, frozenset(nxt)))
        if any(self.grammar.final(s) for s in self.states):
            found += self.vocabulary.end_ids
        return found or over  # a budget too small from the start: valid answers, cut at the budget

    def _fits(self, state: tuple, left: int) -> bool:
        """Whether ``left`` tokens can still finish the answer from ``state``: finish a label
        (a byte a token, at worst), copy the rest with the longest tokens, close what is open, end."""
        if state[0] == "none":
            return left >= len(self.grammar.none) - state[1] + 1
        copy = self._copy_plan()[state[1]]
        if state[0] == "text":
            return left >= copy + state[2] + 1
        label = min(len(l) - len(state[3]) for l in self.grammar.labels if l.startswith(state[3]) and len(l) > len(state[3]))
        return left >= label + copy + state[2] + 2

    def _copy_plan(self) -> list[int]:
        """Per text position: the tokens that copy the rest, taking the longest token each time
        (a path every budget check relies on: from any position it is allowed), built once."""
        if self._copy is None:
            text, ids, longest = self.grammar.text, self.vocabulary.ids, self.vocabulary.longest
            plan = [0] * (len(text) + 1)
            for at in range(len(text) - 1, -1, -1):
                size = next((k for k in range(min(longest, len(text) - at), 0, -1) if text[at : at + k] in ids), 0)
                plan[at] = plan[at + size] + 1 if size else len(text) + 1  # a byte no token writes: counted high
            self._copy = plan
        return self._copy


def constraint_for(vocabulary: Vocabulary, spec, budget: int | None = None) -> Constraint:
    """The ``Constraint`` of a prompt's ``bulkner.engines.base.Constraint`` (format, sentence, types)
    for an answer of at most ``budget`` tokens; the prompt builder only writes one for a format
    with a grammar."""
    from bulkner.tagging import answer_format

    return Constraint(vocabulary, answer_format(spec.format).grammar(spec.sentence, spec.types), budget)


def mask_disallowed(logits, rows: dict[int, Constraint]):
    """Set to -inf, in place, every logit of row ``r`` that ``rows[r]`` does not allow; returns ``logits``."""
    import torch

    if not rows:
        return logits
    keep = torch.zeros(logits.shape, dtype=torch.bool)
    for row, constraint in rows.items():
        allowed = [i for i in constraint.allowed() if i < logits.shape[-1]]
        keep[row, allowed] = True
    unconstrained = [r for r in range(logits.shape[0]) if r not in rows]
    keep[unconstrained] = True
    return logits.masked_fill_(~keep.to(logits.device), float("-inf"))


def forced_ranges(decode: Callable[[Sequence[int]], str], token_ids: Sequence[int], steps: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """The ``[start, end)`` character ranges of ``decode(token_ids)`` that the tokens at ``steps``
    (indices into ``token_ids``) wrote: ``Generation.forced`` from the steps a constraint forced.
    A range starts where the text before and after the token first differ (a token that completes
    a character split over two rewrites its placeholder); a token that writes no text (the end
    token) gives no range."""
    ids, ranges = list(token_ids), []
    for k in sorted(set(steps)):
        if k < len(ids):
            before, after = decode(ids[:k]), decode(ids[: k + 1])
            start = len(os.path.commonprefix([before, after]))
            if len(after) > start:
                ranges.append((start, len(after)))
    return tuple(ranges)


class TransformersConstraints:
    """A ``transformers`` logits processor for one left-padded ``generate`` batch: row ``r``
    follows ``constraints[r]`` (None: free) until it writes an end token. ``forced[r]``: the
    answer steps where the model's first choice was not allowed (``forced_ranges``)."""

    def __init__(self, constraints: Sequence[Constraint | None], prompt_width: int) -> None:
        self.constraints, self.width = list(constraints), prompt_width
        self.forced: list[list[int]] = [[] for _ in self.constraints]

    def __call__(self, input_ids, scores):
        rows, steps = {}, {}
        for row, constraint in enumerate(self.constraints):
            if constraint is None:
                continue
            written = input_ids[row, self.width :].tolist()
            if any(t in constraint.vocabulary.end_ids for t in written):
                continue  # finished: transformers pads it from here on
            constraint.advance(written)
            rows[row], steps[row] = constraint, len(written)
        if not rows:
            return scores
        live = list(steps)
        first = scores[live].argmax(-1)
        masked = mask_disallowed(scores, rows)
        for row, lost in zip(live, masked[live, first].isinf().tolist()):
            if lost:
                self.forced[row].append(steps[row])
        return masked
