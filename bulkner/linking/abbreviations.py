"""Abbreviation definitions in a document, and one entity type per short form.

Detection is Schwartz & Hearst (2003), the algorithm scispaCy builds on, over character offsets.
A parenthesis after a space holds a short form (SF) candidate, cut at its first ``, `` or ``; ``
("latent TB infection (LTBI, n = 20)"): 2-10 characters, at most two words, a letter, an
alphanumeric first character. Its long form (LF) ends just before the parenthesis, inside the
innermost bracket around it, and is the shortest text whose characters match the SF's letters and
digits right to left, the first one at a word start. One step comes first: when the SF's letters
are the initials of the last words (function words may sit between), those words are the long
form ("targeted testing and treatment (TTT)", where the plain match stops at "treatment"). A
parenthesis of more than two words after a token with a capital letter is the other order,
``SF (long form)``. A long form starts at a whitespace boundary, has at most min(|SF| + 5, 2|SF|)
words (|SF|: the SF's letters and digits; hyphens split words), is longer than the SF, does not
hold it as a word, holds no ``, `` or ``; `` and has brackets only as parts of names
("2-(4-aminophenyl)", not an aside such as "(patients 1 and 2)").

``harmonize`` then makes one document consistent: a short form takes the type of its long form's
entity wherever it occurs, and a short form whose long form is no entity is no entity either.
``scripts/abbreviation_gold_check.py`` measures how well these rules match BC5CDR, NCBI-disease
and BioRED gold.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Iterator, NamedTuple, Sequence

from bulkner.linking import by_document
from bulkner.schema import Entity, Sentence

VERSION = "1"
"""Changes whenever detection or the rules of ``harmonize`` change; part of the run fingerprint."""
CLOSERS = {")": "(", "]": "[", "}": "{"}
QUOTES = "\"'‘’“”«»"
FUNCTION_WORDS = frozenset("a an and by for in of on or the to with".split())
"""Words an initials match may skip ("testing and treatment"), and that keep an entity from standing
for a long form it differs from ("deficiency of aspartoacylase" for "aspartoacylase")."""
_WORD = re.compile(r"[^\W_]+")


class Abbreviation(NamedTuple):
    """A definition: the short form ``[short_start, short_end)`` and its long form ``[long_start, long_end)``."""

    short_start: int
    short_end: int
    long_start: int
    long_end: int


def find_abbreviations(text: str) -> list[Abbreviation]:
    """The abbreviation definitions of one sentence, offsets into ``text``, in text order."""
    found = []
    for window, open_at, close_at in _parentheses(text):
        start, end = _trim(text, open_at + 1, _cut(text, open_at + 1, close_at))
        if _is_short_form(text[start:end]):
            found.append(_definition(text, start, end, window, open_at))
        elif len(text[start:end].split()) > 2:  # SF (long form)
            token_start, token_end = _token_before(text, window, open_at)
            token = text[token_start:token_end]
            if _is_short_form(token) and any(c.isupper() for c in token):
                found.append(_definition(text, token_start, token_end, start, end))
    return [a for a in found if a is not None]


def document_abbreviations(sentences: Sequence[Sentence]) -> dict[str, tuple[Sentence, Abbreviation]]:
    """The first definition of each short form in a document's sentences (reading order), with the
    sentence that holds it; offsets are into the passage text, like the sentence's own."""
    found: dict[str, tuple[Sentence, Abbreviation]] = {}
    for s in sorted(sentences, key=lambda s: (s.passage_index, s.sentence_index)):
        for a in find_abbreviations(s.text):
            found.setdefault(s.text[a.short_start : a.short_end], (s, Abbreviation._make(x + s.start for x in a)))
    return found


def long_form_match(sentence: Sentence, a: Abbreviation, entities: Sequence[Entity]) -> tuple[str, Entity | None]:
    """How the long form of ``a`` (defined in ``sentence``, passage offsets) meets ``entities`` of
    that passage: ``("exact", e)``, it is entity ``e``; ``("near", e)``, the longest entity ``e``
    that ends where it ends and differs from it by words that are no function words only ("TB
    infection" for "latent TB infection", "X-linked adrenoleukodystrophy" for "adrenoleukodystrophy";
    not "rapamycin" for "mammalian target of rapamycin", nor "deficiency of aspartoacylase" for
    "aspartoacylase"); ``("partial", None)``, entities overlap it but none of those; ``("none", None)``.
    Ties go to the higher score, then the type name.
    """

    def fits(e: Entity) -> bool:
        if e.sentence.key != sentence.key or e.end != a.long_end:
            return False
        lo, hi = sorted((e.start - sentence.start, a.long_start - sentence.start))
        return FUNCTION_WORDS.isdisjoint(_WORD.findall(sentence.text[lo:hi].lower()))

    fitting = [e for e in entities if fits(e)]
    best = max(fitting, key=lambda e: (e.start == a.long_start, e.end - e.start, e.score, e.type), default=None)
    if best is not None:
        return ("exact" if best.start == a.long_start else "near"), best
    return ("partial" if any(e.start < a.long_end and a.long_start < e.end for e in entities) else "none"), None


def short_form_mentions(sentences: Sequence[Sentence], short: str) -> Iterator[tuple[Sentence, int, int]]:
    """Whole-token mentions of ``short`` as (sentence, start, end), passage offsets."""
    for s in sentences:
        for i in _occurrences(short, s.text):
            yield s, s.start + i, s.start + i + len(short)


def harmonize(sentences: Sequence[Sentence], entities: Sequence[Entity]) -> tuple[list[Entity], Counter]:
    """One type per short form in a document: ``sentences`` are all of its sentences, ``entities``
    its kept entities. Returns the new entities, ordered by (passage, start, end, type) and unique
    by (sentence, start, end, type), and counts of ``definitions``, ``retyped``, ``added``, ``dropped``.

    Each rule acts on the whole-token, case-sensitive mentions of a short form anywhere in the
    document, before its definition too (a title uses what the abstract defines):

    - the long form is an entity: entities exactly on a mention take its type, entities that
      overlap a mention without holding it whole are dropped, and a mention with no entity on or
      around it becomes one (with the long form entity's score);
    - another entity stands for the long form (``long_form_match`` says ``near``): entities exactly
      on a mention take its type, nothing is added or dropped (weaker evidence);
    - no entity touches the long form: entities exactly on a mention are dropped;
    - an entity covers part of the long form only: nothing changes.

    An entity that holds a mention inside a longer name ("LTBI treatment") is kept as it is, and so
    is every long form entity. Raises ``ValueError`` when the records come from more than one document.
    """
    documents = {s.doc_id for s in sentences} | {e.sentence.doc_id for e in entities}
    if len(documents) > 1:
        raise ValueError(f"harmonize takes one document at a time, got {sorted(documents)}")
    by_passage: dict[int, list[Entity]] = defaultdict(list)
    for e in entities:
        by_passage[e.sentence.passage_index].append(e)
    defined = document_abbreviations(sentences)
    matches = {short: long_form_match(s, a, by_passage[s.passage_index]) for short, (s, a) in defined.items()}
    protected = {source for _, source in matches.values() if source is not None}
    drop: set[Entity] = set()
    retype: dict[Entity, str] = {}
    add: list[Entity] = []
    for short, (kind, source) in matches.items():
        if kind == "partial":
            continue
        for sentence, start, end in short_form_mentions(sentences, short):
            overlapping = [e for e in by_passage[sentence.passage_index] if e.start < end and start < e.end]
            free = [e for e in overlapping if e not in protected]
            on_it = [e for e in free if (e.start, e.end) == (start, end)]
            if source is None:
                drop.update(on_it)
                continue
            retype.update((e, source.type) for e in on_it)
            if kind == "exact":
                crossing = [e for e in free if not e.start <= start < end <= e.end]
                drop.update(crossing)
                if len(crossing) == len(overlapping):  # nothing exactly on or around the mention
                    add.append(Entity(sentence, start, end, source.type, source.score, "abbreviation"))
    return _merge(entities, drop, retype, add, Counter(definitions=len(defined)))


def harmonize_documents(sentences: Sequence[Sentence], entities: Sequence[Entity]) -> tuple[list[Entity], Counter]:
    """:func:`harmonize` over each document of ``sentences`` in turn (a batch of whole documents);
    the entities in document order and the counts summed."""
    result: list[Entity] = []
    counts: Counter = Counter()
    for own, found in by_document(sentences, entities):
        kept, changed = harmonize(own, found)
        result += kept
        counts += changed
    return result, counts


def _merge(
    entities: Sequence[Entity], drop: set[Entity], retype: dict[Entity, str], add: list[Entity], stats: Counter
) -> tuple[list[Entity], Counter]:
    """Apply the changes; a change that would duplicate an entity counts as a drop, not a retype."""
    result: dict[tuple, Entity] = {}
    for e in entities:
        new = replace(e, type=retype.get(e, e.type))
        key = (new.sentence.key, new.start, new.end, new.type)
        if e in drop or key in result:
            stats["dropped"] += 1
            continue
        result[key] = new
        stats["retyped"] += new.type != e.type
    for e in add:
        stats["added"] += result.setdefault((e.sentence.key, e.start, e.end, e.type), e) is e
    ordered = sorted(result.values(), key=lambda e: (e.sentence.passage_index, e.start, e.end, e.type))
    return ordered, Counter({k: stats[k] for k in ("definitions", "retyped", "added", "dropped")})


def _occurrences(short: str, text: str) -> Iterator[int]:
    """Starts of ``short`` in ``text`` with no letter or digit right before or after it."""
    i = text.find(short)
    while i >= 0:
        j = i + len(short)
        if (i == 0 or not text[i - 1].isalnum()) and (j == len(text) or not text[j].isalnum()):
            yield i
        i = text.find(short, i + 1)


def _parentheses(text: str) -> list[tuple[int, int, int]]:
    """``(window, open, close)`` of each closed round bracket that follows whitespace; ``window`` is
    where the text inside the innermost bracket around it starts (0 at top level)."""
    stack: list[tuple[str, int, int]] = []
    found = []
    for i, c in enumerate(text):
        if c in "([{":
            stack.append((c, i, stack[-1][1] + 1 if stack else 0))
        elif c in CLOSERS and stack and stack[-1][0] == CLOSERS[c]:
            _, at, window = stack.pop()
            if c == ")" and at > 0 and text[at - 1].isspace():
                found.append((window, at, i))
    return sorted(found, key=lambda f: f[1])


def _cut(text: str, start: int, end: int) -> int:
    """Where the short form candidate in ``text[start:end]`` ends: at its first ``, `` or ``; ``."""
    return min((i for i in (text.find(", ", start, end), text.find("; ", start, end)) if i >= 0), default=end)


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` without the whitespace and quotes at either end."""
    while start < end and (text[start].isspace() or text[start] in QUOTES):
        start += 1
    while end > start and (text[end - 1].isspace() or text[end - 1] in QUOTES):
        end -= 1
    return start, end


def _token_before(text: str, lo: int, hi: int) -> tuple[int, int]:
    """The last whitespace-separated token of ``text[lo:hi]``, without quotes."""
    end = hi
    while end > lo and text[end - 1].isspace():
        end -= 1
    start = end
    while start > lo and not text[start - 1].isspace():
        start -= 1
    return _trim(text, start, end)


def _is_short_form(s: str) -> bool:
    return 2 <= len(s) <= 10 and len(s.split()) <= 2 and s[0].isalnum() and any(c.isalpha() for c in s)


def _definition(text: str, short_start: int, short_end: int, lo: int, hi: int) -> Abbreviation | None:
    """The definition of ``text[short_start:short_end]`` whose long form ends where ``text[lo:hi]``
    does, or None."""
    lo, hi = _trim(text, lo, hi)
    short = text[short_start:short_end]
    chars = [c.lower() for c in short if c.isalnum()]
    start = _initials_start(chars, text, lo, hi)
    start = _match_start(chars, text, lo, hi) if start is None else start
    if start is None:
        return None
    while start > lo and not text[start - 1].isspace():
        start -= 1
    long = text[start:hi]
    if len(long.replace("-", " ").split()) > min(len(chars) + 5, len(chars) * 2) or len(long) <= len(short):
        return None
    if next(_occurrences(short, long), None) is not None or ", " in long or "; " in long or not _plain_brackets(long):
        return None
    return Abbreviation(short_start, short_end, start, hi)


def _initials_start(chars: list[str], text: str, lo: int, hi: int) -> int | None:
    """Start of the last words of ``text[lo:hi]`` whose initials spell ``chars`` (function words may
    sit between two initials), or None."""
    k = len(chars) - 1
    for word in reversed(list(_WORD.finditer(text, lo, hi))):
        if word.group()[0].lower() == chars[k]:
            k -= 1
            if k < 0:
                return word.start()
        elif k == len(chars) - 1 or word.group().lower() not in FUNCTION_WORDS:
            return None
    return None


def _match_start(chars: list[str], text: str, lo: int, hi: int) -> int | None:
    """Schwartz & Hearst's match: ``chars`` found right to left in ``text[lo:hi]``, the first at a
    word start (no letter or digit before it); where the first one matched, or None."""
    i = hi - 1
    for k in range(len(chars) - 1, -1, -1):
        while i >= lo and (text[i].lower() != chars[k] or (k == 0 and i > lo and text[i - 1].isalnum())):
            i -= 1
        if i < lo:
            return None
        i -= 1
    return i + 1


def _plain_brackets(s: str) -> bool:
    """Balanced brackets that are part of a name ("2-(4-aminophenyl)", "(R)-alpha-"), none an aside:
    none holds whitespace ("(n = 5)") or stands alone as a word ("asparagine (AAC) for serine")."""
    stack: list[tuple[str, int]] = []
    for i, c in enumerate(s):
        if c in "([{":
            stack.append((c, i))
        elif c.isspace() and stack:
            return False
        elif c in CLOSERS:
            if not stack or stack[-1][0] != CLOSERS[c]:
                return False
            start = stack.pop()[1]
            if (start == 0 or s[start - 1].isspace()) and (i + 1 == len(s) or s[i + 1].isspace()):
                return False
    return not stack
