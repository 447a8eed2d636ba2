"""Entity selectors: a small encoder that checks the generator's spans after parsing.

A selector is a saved directory (``selector.json`` names its ``kind``); :func:`open_selector` is the
one door that reads the kind and builds it, and :class:`Selector` is what the tagger calls. The one
kind in the product is ``span`` (:mod:`bulkner.selectors.span`): a span classifier that drops the
generator's spans it doubts and adds spans it is sure of. Its training and calibration live in
:mod:`bulkner.selectors.train`; a run never imports them. The contrastive pair cross-encoder that
came first was measured and removed (docs/selectors.md keeps its numbers).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

from bulkner.types import EntityType

SELECTOR_VERSION = "1"
"""Version of the ``selector.json`` layout; a selector of another version is refused."""
META_FILE = "selector.json"
KINDS = {"span": "bulkner.selectors.span:SpanSelector"}
"""Each kind of selector and the class that runs it."""


@dataclass(frozen=True)
class Candidate:
    """A span the generator proposed: ``sentence[start:end]`` as a mention of ``type``."""

    sentence: str
    start: int
    end: int
    type: EntityType

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end <= len(self.sentence):
            raise ValueError(f"candidate span [{self.start}, {self.end}) is empty or outside a sentence of {len(self.sentence)} chars")


Added = tuple[int, int, int, str, float]
"""A span a selector adds: ``(sentence index, start, end, type name, probability)``."""


@dataclass(frozen=True)
class Window:
    """The stretch ``[start, end)`` of a sentence the generator writes (``--generate window``): it
    holds every span the classifier is unsure of; ``start`` is 0 or a whitespace character and
    ``end`` the sentence's end or a whitespace character. ``outside``: the classifier's own spans
    ``(start, end, type name)`` outside it, those before it written into the answer's head for the
    generator to continue."""

    start: int
    end: int
    outside: tuple[tuple[int, int, str], ...] = ()


class Selector(Protocol):
    """What the tagger calls; ``setup`` loads the model (once per worker), ``close`` releases it."""

    def setup(self) -> None: ...

    band: tuple[float, float] | None
    """The calibrated uncertainty band of the cascade (``--generate uncertain``), or None."""

    def triage(self, sentences: Sequence[str], types: Sequence[str]) -> tuple[list[Any], list[list[Added] | None]]:
        """The cascade: each sentence's span scores, and the spans of the sentences it decides
        without the generator (None for those the generator must read)."""
        ...

    def windows(self, sentences: Sequence[str], probs: Sequence[Any], types: Sequence[str]) -> list[Window]:
        """The cascade with windows: for sentences ``triage`` left to the generator (their scores
        ``probs``), the stretch of each that the generator must write."""
        ...

    def probs_by_text(self, sentences: Sequence[str]) -> dict[str, Any]:
        """Each sentence's span scores, by text (what ``triage``, ``select`` and ``confirm`` take)."""
        ...

    def select(self, candidates: Sequence[Candidate], owners: Sequence[int], sentences: Sequence[str],
               types: Sequence[str], probs: Sequence[Any] | None = None) -> tuple[list[float], list[bool], list[Added]]:
        """Each candidate's score and keep decision (``candidates[i]`` is a span of
        ``sentences[owners[i]]``), and the spans of ``types`` the selector adds; ``probs``: the
        sentences' scores from ``triage``, not computed again."""
        ...

    threshold: float
    """The keep threshold."""

    def confirm(self, candidates: Sequence[Candidate], owners: Sequence[int], sentences: Sequence[str],
                known: dict | None = None) -> list[float | None]:
        """Each candidate's score (None: not scorable); the caller keeps those at ``threshold``.
        ``known``: sentences' scores from ``triage``, by text, not computed again."""
        ...

    def fingerprint(self) -> str:
        """Kind, version, weights by content and the thresholds used: joins the run fingerprint."""
        ...

    def close(self) -> None: ...


def read_meta(path: str | Path) -> dict:
    """The ``selector.json`` of a selector directory; ValueError when it is not one this code runs."""
    file = Path(path) / META_FILE
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a selector directory (no readable {META_FILE}: {err})") from err
    if meta.get("version") != SELECTOR_VERSION:
        raise ValueError(f"{file} has selector version {meta.get('version')!r}; this code reads {SELECTOR_VERSION!r}")
    if meta.get("kind") not in KINDS:
        if "kind" not in meta:
            raise ValueError(f"{file} is a pair selector, which bulkner no longer runs (docs/selectors.md); "
                             f"train a span selector with bulkner train-selector")
        raise ValueError(f"{file} has selector kind {meta['kind']!r}; kinds are {', '.join(KINDS)}")
    return meta


def write_meta(path: str | Path, meta: dict) -> None:
    """Write ``selector.json`` (sorted keys, so that its content id is stable)."""
    (Path(path) / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")


def open_selector(path: str | Path, threshold: float | None = None, device: str = "auto") -> Selector:
    """The selector saved at ``path``, of the kind its ``selector.json`` names (not loaded yet:
    ``setup`` loads it). ``threshold`` overrides its calibrated keep threshold."""
    module, name = KINDS[read_meta(path)["kind"]].split(":")
    return getattr(importlib.import_module(module), name)(path, threshold, device=device)


def choose_selector(selector: str | None, enabled: bool, default_tagger: bool, types: Sequence[str]) -> str | None:
    """What the CLI's ``--selector``/``--no-selector`` mean: a given directory as is; none with
    ``--no-selector``; else the shipped default selector, for the default tagger (it was
    calibrated on that tagger's errors) and only when it was trained on every requested type."""
    if selector is not None:
        if not enabled:
            raise ValueError("--selector and --no-selector contradict each other")
        return selector
    if not enabled or not default_tagger:
        return None
    from bulkner.checkpoints import default_selector

    path = default_selector()
    return path if set(types) <= set(read_meta(path)["types"]) else None
