"""Biomedical sentence splitting with character offsets.

One regular expression finds candidate boundaries (terminal punctuation followed by whitespace,
CJK sentence punctuation, blank lines); a decision function runs a short list of named rules
over the words around each candidate (abbreviations, species names, initials, enumerations,
ellipses, brackets). Everything is a pure function of the text.

A single newline is ordinary whitespace (hard-wrapped text); a blank line always ends a sentence.
"""

from __future__ import annotations

import logging
import re
from typing import Callable, NamedTuple, Optional

logger = logging.getLogger(__name__)

__all__ = ["split_sentences"]

_CLOSERS = ")]}\"'”’»」』）》"
_OPENING_QUOTES = "\"'“‘«"
_OPENERS = "([{" + _OPENING_QUOTES
_CJK = "\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff"
_CLOSE_CLASS = r"[)\]}\"'”’»」』）》]"

_CANDIDATE = re.compile(
    r"(?P<par>\n\s*\n)"
    rf"|(?P<cjk>[。！？]+{_CLOSE_CLASS}*|(?<=[{_CJK}])[?!]+{_CLOSE_CLASS}*)"
    rf"|(?P<west>[.?!…]+(?:{_CLOSE_CLASS}+[.?!…]*)*)(?=\s|\Z|\(ABSTRACT TRUNCATED)"
)
_NEXT = re.compile(r"(\s*)(\S*)")
_CLOSE_THEN_PERIOD = re.compile(_CLOSE_CLASS + r"\.")
_WINDOW = 120  # characters of left context looked at for a decision

# Abbreviations (lower case, without the final period) that never end a sentence.
_PREFIX_ABBREVS = frozenset(
    "fig figs eq eqs ref refs suppl supp tab sect ch chap vol vols pp dr drs mr mrs ms prof "
    "st mt ft dept univ approx ca cf c.f vs viz e.g i.e incl ex".split()
)
# Abbreviations that may end a sentence; they end it only when a sentence start follows.
_SUFFIX_ABBREVS = frozenset(
    "al etc resp inc ltd co corp jr sr sp spp ssp subsp pv var cv coll aff ibid "
    "min mins h hr hrs sec s d wk wks mo mos yr yrs mg kg g ml l mm cm wt conc "
    "iv ip sc po im temp max avg std est".split()
)
# Suffix abbreviations that go on before a lower-case symbol ("Leishmania spp. kDNA").
_TAXON_ABBREVS = frozenset("sp spp ssp subsp pv var cv coll aff".split())
_ROMAN = frozenset("i ii iii iv v vi vii viii ix x xi xii".split())
_DOTTED = re.compile(r"^(?:[A-Za-z]{1,2}\.)+[A-Za-z]{1,2}$")  # i.v, p.o, U.S, Ph.D, b.i.d
_INITIAL_TOKEN = re.compile(r"^[A-Z]\.(?:[A-Z]\.)*[,;]?$")  # J.  J.R.  I.,
_JOURNAL_WORD = re.compile(r"^[A-Z][a-z]{1,5}\.[,;]?$")  # Med.  Biol.  Chem.,
_MIXED_SYMBOL = re.compile(r"^[a-zα-ω][A-Za-z]*[A-Z0-9]")  # p53  mRNA  siRNA  qPCR

VERSION = "1"
"""Changes whenever splitting changes; part of the output fingerprint."""


class Candidate(NamedTuple):
    """The context of one possible sentence end (terminal punctuation followed by whitespace)."""

    word: str  # the word before the punctuation, openers stripped: "i.v", "Fig", "E", "2A)"
    prev: str  # the token before that word ("" if none)
    prev2: str  # the token before ``prev`` ("" if none)
    cluster: str  # the punctuation run, e.g. ".", ".)", "?\"", "..."
    gap: str  # whitespace between the cluster and the next token
    next: str  # the next whitespace-delimited token
    at_start: bool  # ``word`` is the first token of its sentence
    in_brackets: bool  # a "(" or "[" opened earlier in the sentence is still open


def _starts_upper(token: str) -> bool:
    """True when the token (after opening quotes) starts with an upper-case letter."""
    core = token.lstrip(_OPENING_QUOTES)
    return bool(core) and core[0].isupper()


def _starts_lower_word(token: str) -> bool:
    """True for a plain lower-case word such as ``coli,`` or ``spretus`` (species epithets)."""
    return len(token) >= 2 and token[0].islower() and token[1].islower() and token[0].isalpha()


def _lookup_key(word: str) -> str:
    """Lower-cased word for abbreviation lookups; acronyms (NO, CF, MR, MS) never match."""
    return "" if len(word) > 1 and word.isupper() else word.lower()


def _is_abbrev(word: str) -> bool:
    """An abbreviation that may end a sentence: et al., etc., i.v., U.S., min., single letters."""
    low = _lookup_key(word)
    return (
        low in _SUFFIX_ABBREVS
        or low in _ROMAN
        or bool(_DOTTED.match(word))
        or (len(word) == 1 and word.islower())
    )


def _rule_truncation_marker(c: Candidate) -> Optional[bool]:
    """PubMed glues "(ABSTRACT TRUNCATED AT 250 WORDS)" to the last period: a boundary."""
    return True if not c.gap and c.next.startswith("(ABSTRACT") else None


def _rule_question_exclamation(c: Candidate) -> Optional[bool]:
    """"?" and "!" end a sentence, unless inside a quote/bracket that the sentence goes on after."""
    if "?" not in c.cluster and "!" not in c.cluster:
        return None
    quoted = c.cluster[-1] in _CLOSERS
    return not (quoted and c.next[:1].islower())


def _rule_ellipsis(c: Candidate) -> Optional[bool]:
    """An ellipsis ends a sentence only before a capitalized word; "[...]" never does."""
    if "..." not in c.cluster and "…" not in c.cluster:
        return None
    if not c.word and c.cluster[-1] in ")]":
        return False  # "[...]" marks an omission inside a sentence
    return _starts_upper(c.next)


def _rule_period_after_bracket(c: Candidate) -> Optional[bool]:
    """"...(Fig. 1)." and "...used.)." end a sentence: the period follows a closing bracket."""
    if (c.word and c.word[-1] in _CLOSERS) or _CLOSE_THEN_PERIOD.search(c.cluster):
        return True
    return None


def _rule_prefix_abbreviation(c: Candidate) -> Optional[bool]:
    """Fig. 2, e.g., vs., Dr. Smith, approx. 5, No. 5: never a sentence end."""
    low = _lookup_key(c.word)
    if low in _PREFIX_ABBREVS:
        return False
    if low in ("no", "nos") and c.next[:1].isdigit():
        return False
    return None


def _rule_abbreviation_in_brackets(c: Candidate) -> Optional[bool]:
    """"(+/-s.d.)", "(etc.)", "Shimadzu Co.)": an abbreviation closing a bracket goes on."""
    if c.cluster[-1] in ")]" and _is_abbrev(c.word) and len(c.word) > 1:
        return False
    return None


def _rule_inside_brackets(c: Candidate) -> Optional[bool]:
    """"(E. Verdin, J. Virol. 65:6790)", "(Nat. Med. 2019)": abbreviations in open brackets."""
    if not c.in_brackets or c.cluster[-1] in _CLOSERS:
        return None
    word = c.word
    short_capitalized = word[:1].isupper() and len(word) <= 8 and word.replace(".", "").isalpha()
    return False if short_capitalized else None


def _rule_enumeration(c: Candidate) -> Optional[bool]:
    """List markers "1." or "ii." at a sentence start or after ":"/";" do not end a sentence."""
    is_marker = (c.word.isdigit() and len(c.word) <= 2) or c.word in _ROMAN
    if is_marker and (c.at_start or c.prev.endswith((":", ";"))):
        return False
    return None


def _rule_species_or_initial(c: Candidate) -> Optional[bool]:
    """E. coli, Cx. quinquefasciatus (species); J. D. Watson, Smith, J. (initials)."""
    word = c.word.rsplit("-", 1)[-1]  # "anti-E. chaffeensis"
    capitalized = word[:1].isupper() and word[1:].lower() == word[1:]
    if not (capitalized and word.isalpha() and len(word) <= 3):
        return None
    if _starts_lower_word(c.next):
        return False  # genus abbreviation (E., Cx., Sch.) followed by a species epithet
    if len(c.word) > 1:
        return None
    prev = c.prev.lstrip(_OPENERS)
    if _INITIAL_TOKEN.match(c.next) or _INITIAL_TOKEN.match(prev) or prev.endswith(","):
        return False
    if _JOURNAL_WORD.match(c.next) and c.next.lower().rstrip(".,;") not in _PREFIX_ABBREVS:
        return False  # "J. Biol. Chem."
    if c.prev.lower().rstrip(".") in ("dr", "prof", "mr", "mrs", "ms", "by"):
        return False
    if c.prev in ("and", "&") and c.prev2[:1].isupper() and len(c.prev2.rstrip(",")) > 2:
        return False  # "Watson and F. Crick"
    if c.at_start and _starts_upper(c.next):
        return False  # "J. Smith reported ..."
    return True  # "vitamin D. The", "hepatitis B. We", "3.502 (4) A. There"


def _rule_suffix_abbreviation(c: Candidate) -> Optional[bool]:
    """et al., etc., i.v., min., U.S.: a boundary only when a sentence start follows."""
    if not _is_abbrev(c.word):
        return None
    if _starts_upper(c.next):
        return True
    goes_on = "." in c.word or _lookup_key(c.word) in _TAXON_ABBREVS  # "i.v. rHuEPO", "spp. kDNA"
    return not goes_on and bool(_MIXED_SYMBOL.match(c.next))  # "et al. p53 was", "24 h. mRNA"


def _rule_journal_abbreviation(c: Candidate) -> Optional[bool]:
    """"Nat. Med.", "J. Biol. Chem.": a short capitalized word before another abbreviation."""
    if (
        _JOURNAL_WORD.match(c.word + ".")
        and _JOURNAL_WORD.match(c.next)
        and c.next.lower().rstrip(".,;") not in _PREFIX_ABBREVS
    ):
        return False
    return None


_RULES: tuple[Callable[[Candidate], Optional[bool]], ...] = (
    _rule_truncation_marker,
    _rule_question_exclamation,
    _rule_ellipsis,
    _rule_period_after_bracket,
    _rule_prefix_abbreviation,
    _rule_abbreviation_in_brackets,
    _rule_inside_brackets,
    _rule_enumeration,
    _rule_species_or_initial,
    _rule_suffix_abbreviation,
    _rule_journal_abbreviation,
)


def is_boundary(c: Candidate) -> bool:
    """Decide one candidate: the first rule with an opinion wins; the default is a boundary."""
    for rule in _RULES:
        verdict = rule(c)
        if verdict is not None:
            return verdict
    return True


def _candidate(text: str, start: int, end: int, sent_start: int) -> Candidate:
    """Build the context of the punctuation run ``text[start:end]``."""
    lo = max(sent_start, start - _WINDOW)
    window = text[lo:start]
    tokens = window.split()
    if not window or window[-1].isspace():
        tokens.append("")
    raw = tokens[-1]
    word = raw.rsplit("/", 1)[-1].lstrip(_OPENERS + "-+")
    gap, nxt = _NEXT.match(text, end).groups()
    sentence = text[max(sent_start, start - 4 * _WINDOW) : start]
    depth = sentence.count("(") + sentence.count("[") - sentence.count(")") - sentence.count("]")
    return Candidate(
        word=word,
        prev=tokens[-2] if len(tokens) > 1 else "",
        prev2=tokens[-3] if len(tokens) > 2 else "",
        cluster=text[start:end],
        gap=gap,
        next=nxt,
        at_start=len(tokens) == 1 and lo == sent_start,
        in_brackets=depth > 0,
    )


def _cuts(text: str) -> list[int]:
    """Offsets where sentences end (before stripping), in increasing order."""
    cuts: list[int] = []
    last = 0
    for m in _CANDIDATE.finditer(text):
        if m.lastgroup == "par":
            cut = m.start()
        elif m.lastgroup == "cjk":
            cut = m.end()
        else:
            cut = m.end()
            if cut == len(text) or not is_boundary(_candidate(text, m.start(), cut, last)):
                continue
        if cut > last:
            cuts.append(cut)
            last = cut
    cuts.append(len(text))
    return cuts


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence boundaries as code-point offsets [start, end) into text; each sentence stripped of
    surrounding whitespace (text[start:end] == text[start:end].strip()), in order, non-overlapping,
    covering every non-whitespace character of text exactly once."""
    if not isinstance(text, str):
        raise ValueError(f"split_sentences expects str, got {type(text).__name__}")
    spans: list[tuple[int, int]] = []
    begin = 0
    for cut in _cuts(text):
        piece = text[begin:cut]
        stripped = piece.strip()
        if stripped:
            s = begin + len(piece) - len(piece.lstrip())
            spans.append((s, s + len(stripped)))
        begin = cut
    return spans
