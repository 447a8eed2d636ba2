"""The span selector: a span classifier over a small encoder that filters the generator's spans and
adds the ones it is sure of.

One encoder pass per sentence (no markers, no type text): every span that starts at a word start
and ends at a word end, at most ``MAX_WIDTH`` tokens long, gets a softmax over ``none`` and the
trained types from its first and last token states and a width embedding. At run time each span
the generator proposed is kept when its probability for its type is at least ``keep_threshold``;
then spans the generator did not propose, overlapping no kept span, are added greedily from the
most probable down while their probability is at least ``add_threshold``. Both thresholds are
calibrated together on the generator's spans in held-out training sentences
(:mod:`bulkner.selectors.train`), for the F1 of generator plus selector; then the boundary repair
(a kept span gives way to an overlapping span of its type the classifier is much surer of) is
calibrated there too, on top of them.

A saved span selector is a directory (:mod:`bulkner.selectors.encoder`): ``selector.json`` with
``"kind": "span"``, the thresholds and the types; the tokenizer; the fine-tuned encoder weights
over the packaged all-MiniLM-L6-v2; ``head.safetensors`` with the width embedding and the
classifier. Measurements: docs/selectors.md.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Sequence

from bulkner.selectors import META_FILE, SELECTOR_VERSION, Added, Candidate, Window, read_meta
from bulkner.selectors.encoder import autocast, collate, load_encoder, pick_device
from bulkner.tagging.format import WORD_RE

logger = logging.getLogger(__name__)

KIND = "span"
MAX_WIDTH = 24
"""Longest span the classifier scores, in encoder tokens (longer generator spans are kept unscored)."""
WIDTH_DIM = 32
HIDDEN = 256

READING = "2"
"""How the encoder reads a sentence, in the fingerprint (2: a long one in overlapping windows, :func:`encode`;
1: cut at ``max_length``, its spans past the cut kept unscored)."""

NEGLIGIBLE = 1e-4
"""A scorable span whose every type probability is under this reads as certainly none (``Probs``):
every calibrated threshold, band edge and repair floor (``selectors.train`` grids) is above it."""


class Probs(dict):
    """``(start, end)`` char span of a sentence -> ``[p_none, p_type1, ...]``, for its scorable
    spans. Iterating gives the spans with a type probability of at least ``NEGLIGIBLE`` (about 4%
    of them in PubMed text, so the decisions that look through every span look through few); the
    others (``rest``: sorted ``start << 32 | end`` keys, 8 bytes a span, so a chunk's sentences can
    keep theirs for the document pass) are still scorable and read ``[1.0, 0.0, ...]``."""

    def __init__(self, rows=(), rest: Sequence[int] = (), types: int = 0) -> None:
        import numpy as np

        super().__init__(rows)
        self.rest = np.sort(np.asarray(rest, dtype=np.int64))
        self.none_row = [1.0] + [0.0] * types

    def _rest(self, key: object) -> bool:
        if not (isinstance(key, tuple) and len(key) == 2) or not len(self.rest):
            return False
        packed = (key[0] << 32) | key[1]
        at = int(self.rest.searchsorted(packed))
        return at < len(self.rest) and int(self.rest[at]) == packed

    def __missing__(self, key: tuple[int, int]) -> list[float]:
        if self._rest(key):
            return self.none_row
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or self._rest(key)

    def get(self, key: tuple[int, int], default=None):
        return self[key] if key in self else default


def word_tokens(text: str) -> list[tuple[int, int]]:
    """Words and single punctuation marks: a scorable span starts at one's start and ends at one's end."""
    return [m.span() for m in WORD_RE.finditer(text)]


def span_model(encoder: Any, n_types: int) -> Any:
    """The classifier over ``encoder``: ``forward(batch, index)`` gives logits [N, 1 + n_types] for
    ``index`` rows ``(row, first token, last token)``."""
    import torch

    class SpanModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            size = encoder.config.hidden_size
            self.width = torch.nn.Embedding(MAX_WIDTH, WIDTH_DIM)
            self.mlp = torch.nn.Sequential(torch.nn.Linear(2 * size + WIDTH_DIM, HIDDEN), torch.nn.GELU(), torch.nn.Linear(HIDDEN, 1 + n_types))

        def forward(self, batch: dict, index: Any) -> Any:
            """The first layer of ``mlp`` applied to ``[h_first, h_last, width]`` is split into its
            three blocks: the token blocks run once per token, not once per span (a sentence has
            ~10x more spans than tokens), then each span adds its two rows and its width row."""
            hidden = self.encoder(**batch).last_hidden_state
            row, first, last = index[:, 0], index[:, 1], index[:, 2]
            first_layer, size = self.mlp[0], hidden.shape[-1]
            weight = first_layer.weight.to(hidden.dtype)
            starts = hidden @ weight[:, :size].T
            ends = hidden @ weight[:, size : 2 * size].T
            widths = self.width.weight @ first_layer.weight[:, 2 * size :].T + first_layer.bias
            x = starts[row, first] + ends[row, last] + widths[last - first].to(hidden.dtype)
            return self.mlp[2](self.mlp[1](x.to(first_layer.weight.dtype)))

        def head(self) -> Any:
            """The width embedding and the classifier: what ``head.safetensors`` holds."""
            return torch.nn.ModuleDict({"width": self.width, "mlp": self.mlp})

    return SpanModel()


def encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[list[dict], list[Any]]:
    """Tokenized rows and, per text, its scorable spans: an int array of rows ``(row, first token,
    last token, start char, end char)``, ``row`` indexing the returned rows.

    A text longer than ``max_length`` tokens is read in windows of ``max_length`` that overlap by
    half, and by at least ``MAX_WIDTH`` tokens (the tokenizer's overflow rows), so every span of it
    is scorable: each span is scored in the window where it has the most context on its narrower side."""
    import numpy as np

    overlap = min(max(max_length // 2, MAX_WIDTH), max_length - 3)  # a span of MAX_WIDTH tokens fits in one window whole
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, stride=overlap,
                    return_overflowing_tokens=True, return_offsets_mapping=True)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    rows = [{k: enc[k][r] for k in keys} for r in range(len(enc["input_ids"]))]
    found: list[list[Any]] = [[] for _ in texts]
    bounds = [None] * len(texts)
    for r, n in enumerate(enc["overflow_to_sample_mapping"]):
        if bounds[n] is None:
            words = word_tokens(texts[n])
            bounds[n] = ({s for s, _ in words}, {e for _, e in words})
        starts, ends = bounds[n]
        offsets = enc["offset_mapping"][r]
        firsts = np.array([(k, s) for k, (s, e) in enumerate(offsets) if e > s and s in starts], dtype=np.int64).reshape(-1, 2)
        lasts = np.array([(k, e) for k, (s, e) in enumerate(offsets) if e > s and e in ends], dtype=np.int64).reshape(-1, 2)
        i, j = np.nonzero((firsts[:, :1] <= lasts[:, 0]) & (lasts[:, 0] < firsts[:, :1] + MAX_WIDTH))
        first, last = firsts[i, 0], lasts[j, 0]
        context = np.minimum(first, len(offsets) - 1 - last)
        found[n].append(np.column_stack([np.full(len(i), r), first, last, firsts[i, 1], lasts[j, 1], context]))
    spans = []
    for windows in found:
        both = np.concatenate(windows)
        if len(windows) > 1:  # one row per char span: the window with the most context around it
            order = np.lexsort((-both[:, 5], both[:, 4], both[:, 3]))
            both = both[order]
            both = both[np.r_[True, (np.diff(both[:, 3]) != 0) | (np.diff(both[:, 4]) != 0)]]
        spans.append(both[:, :5])
    return rows, spans


def span_probs(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, device: str, batch_size: int = 32) -> list[Probs]:
    """Class probabilities of every scorable span of each text, in input order (sorted-length batches)."""
    import numpy as np
    import torch

    order = sorted(range(len(texts)), key=lambda n: len(texts[n]))
    out: list[Probs] = [Probs() for _ in texts]
    model.eval()
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            chunk = order[b : b + batch_size]
            rows, spans = encode(tokenizer, [texts[n] for n in chunk], max_length)
            index = np.concatenate([f[:, :3] for f in spans])
            if not len(index):
                continue
            with autocast(device, bf16=True):
                logits = model(collate(tokenizer, rows, device), torch.from_numpy(index).to(device))
            probs = torch.softmax(logits.float(), -1).cpu()
            worth = (probs[:, 1:] >= NEGLIGIBLE).any(-1).numpy()
            at = 0
            for r, found in enumerate(spans):
                mine, n = worth[at : at + len(found)], len(found)
                keys = zip(found[mine, 3].tolist(), found[mine, 4].tolist())
                rest = (found[~mine, 3] << 32) | found[~mine, 4]
                out[chunk[r]] = Probs(zip(keys, probs[at : at + n][torch.from_numpy(mine)].tolist()), rest, probs.shape[1] - 1)
                at += n
    return out


Repair = tuple[float, float]
"""Boundary repair ``(margin, floor)``: a kept span gives way to the overlapping span its type is
likeliest on, when that probability is at least ``floor`` and ``margin`` over the kept span's."""


def decide(probs: Probs, proposed: Sequence[tuple[int, int, int]], allowed: Sequence[int], keep_threshold: float,
           add_threshold: float, repair: Repair | None = None) -> tuple[list[float | None], list[bool], list[tuple[int, int, int, float]]]:
    """One sentence: each proposed ``(start, end, type index)``'s probability (None: not scorable),
    whether it is kept (unscorable ones are), and the added spans ``(start, end, type index, p)``.

    A proposed span is kept at ``keep_threshold`` or more. With ``repair``, a kept span whose
    boundaries the classifier doubts gives way to its repair (:data:`Repair`) unless that overlaps
    another kept span of its type; the repair counts as added. Then spans of the ``allowed`` types at
    ``add_threshold`` or more are added, the most probable first, each overlapping no kept or added span."""
    scores = [probs[(s, e)][1 + t] if (s, e) in probs else None for s, e, t in proposed]
    keep = [p is None or p >= keep_threshold for p in scores]
    added: list[tuple[int, int, int, float]] = []
    if repair is not None:
        for k, ((s, e, t), p) in enumerate(zip(proposed, scores)):
            better = keep[k] and p is not None and repaired(probs, s, e, t, p, repair)
            others = [(a, b) for j, (a, b, u) in enumerate(proposed) if keep[j] and j != k and u == t] + [(a, b) for a, b, u, _ in added if u == t]
            if better and not any(better[0] < b and a < better[1] for a, b in others):
                keep[k] = False
                added.append((*better, t, probs[better][1 + t]))
    taken = [(s, e) for (s, e, _), ok in zip(proposed, keep) if ok] + [(s, e) for s, e, _, _ in added]
    if add_threshold <= 1.0:
        ranked = sorted(((p[1 + t], s, e, t) for (s, e), p in probs.items() for t in allowed if p[1 + t] >= add_threshold), reverse=True)
        for p, s, e, t in ranked:
            if not any(s < b and a < e for a, b in taken):
                taken.append((s, e))
                added.append((s, e, t, p))
    return scores, keep, added


def repaired(probs: Probs, start: int, end: int, t: int, p: float, repair: Repair) -> tuple[int, int] | None:
    """The span overlapping ``[start, end)`` that type ``t`` is likeliest on, if its probability is
    at least the repair's floor and its margin over ``p``; else None."""
    margin, floor = repair
    bar = max(floor, p + margin)
    best = max(((q[1 + t], span) for span, q in probs.items() if span[0] < end and start < span[1]), default=(0.0, None))
    return best[1] if best[0] >= bar and best[1] != (start, end) else None


Band = tuple[float, float]
"""The cascade's uncertainty band ``(low, high)`` on a span's probability for a type."""


def triage(probs: Probs, allowed: Sequence[int], band: Band) -> list[tuple[int, int, int, float]] | None:
    """The cascade's decision for one sentence: None when the generator must read it (a span of
    an ``allowed`` type has a probability inside ``band``: ``low <= p < high``); else the classifier's own spans
    ``(start, end, type index, p)``: those at ``high`` or more, the most probable first, none
    overlapping another (as :func:`decide` adds spans)."""
    low, high = band
    if any(low <= p[1 + t] < high for p in probs.values() for t in allowed):
        return None
    return decide(probs, [], allowed, 1.0, high)[2]


def window(text: str, probs: Probs, allowed: Sequence[int], band: Band, names: Sequence[str], keep: float) -> Window:
    """The stretch of ``text`` the generator must write (``--generate window``), for a sentence
    :func:`triage` sends to it: from the first to the last span with a probability inside ``band``
    for an ``allowed`` type, widened over every span that overlaps it with a probability of at least
    ``keep`` (the selector's keep threshold: a span the generator may write and the selector keep
    fits in the window whole) and out to whitespace (the answer's head ends where the source has a
    space, so the generator starts on a whole word), until nothing more overlaps.
    ``outside``: the classifier's own spans at ``high`` or more (as :func:`triage` takes them) outside
    the window; there the classifier decides, as in a sentence it decides alone.
    The whole sentence when nothing is uncertain. ``names``: the
    selector's types, by index."""
    low, high = band
    uncertain = [span for span, p in probs.items() if any(low <= p[1 + t] < high for t in allowed)]
    if not uncertain:
        return Window(0, len(text))
    likely = [span for span, p in probs.items() if any(p[1 + t] >= keep for t in allowed)]
    start, end = min(s for s, _ in uncertain), max(e for _, e in uncertain)
    while True:
        a = min([start, *(s for s, e in likely if s < end and start < e)])
        b = max([end, *(e for s, e in likely if s < end and start < e)])
        while a > 0 and not text[a - 1].isspace():
            a -= 1
        while b < len(text) and not text[b].isspace():
            b += 1
        if (a, b) == (start, end):
            break
        start, end = a, b
    start = len(text[:start].rstrip())
    outside = tuple(sorted((s, e, names[t]) for s, e, t, _ in decide(probs, [], allowed, 1.0, high)[2] if e <= start or s >= end))
    return Window(start, end, outside)


class SpanSelector:
    """A saved span selector: ``select`` filters proposed spans and adds its own (see module doc)."""

    def __init__(self, path: str | Path, threshold: float | None = None, batch_size: int = 32, device: str = "auto") -> None:
        """``threshold`` overrides the calibrated keep threshold (the add threshold stays)."""
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.path = Path(path)
        self.meta = read_meta(self.path)
        missing = [k for k in ("threshold", "add_threshold", "types", "head", "max_length") if k not in self.meta]
        if missing:
            raise ValueError(f"{self.path / META_FILE} is a span selector without {', '.join(missing)}: not written by bulkner train-selector")
        self.threshold = float(self.meta["threshold"] if threshold is None else threshold)
        self.add_threshold = float(self.meta["add_threshold"])
        self.types = list(self.meta["types"])
        repair = self.meta.get("repair")
        self.repair: Repair | None = (float(repair["margin"]), float(repair["floor"])) if repair else None
        """The calibrated boundary repair, or None (a selector calibrated before it: no repair)."""
        cascade = self.meta.get("cascade")
        self.band: Band | None = (float(cascade["low"]), float(cascade["high"])) if cascade else None
        """The calibrated uncertainty band of ``--generate uncertain``, or None (not calibrated)."""
        self.batch_size = batch_size
        self.device = device
        self._lock = threading.Lock()
        """One scoring at a time: a shard's prompt thread (the cascade) and its write thread (the
        document pass) share the model."""
        self._model: Any = None
        self._tokenizer: Any = None

    def setup(self) -> None:
        """Load the encoder, the classifier and the tokenizer."""
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        self.device = pick_device(self.device)
        self._tokenizer = AutoTokenizer.from_pretrained(self.path)
        model = span_model(load_encoder(self.path, self.meta), len(self.types))
        model.head().load_state_dict({k: v.float() for k, v in load_file(str(self.path / self.meta["head"])).items()})
        self._model = model.to(self.device).eval()
        logger.info("span selector %s loaded on %s (keep %.3f, add %.3f)", self.path, self.device, self.threshold, self.add_threshold)

    def probs(self, texts: Sequence[str]) -> list[Probs]:
        """Class probabilities of every scorable span of each text (:func:`span_probs`)."""
        with self._lock:
            if self._model is None:
                self.setup()
            return span_probs(self._model, self._tokenizer, texts, self.meta["max_length"], self.device, self.batch_size)

    def probs_by_text(self, sentences: Sequence[str]) -> dict[str, Probs]:
        """:meth:`probs` by sentence text, a repeated sentence scored once."""
        texts = list(dict.fromkeys(sentences))
        return dict(zip(texts, self.probs(texts)))

    def triage(self, sentences: Sequence[str], types: Sequence[str]) -> tuple[list[Probs], list[list[Added] | None]]:
        """The cascade (``--generate uncertain``): each sentence's span probabilities and, per
        sentence, the classifier's spans ``(sentence index, start, end, type, p)`` of ``types``
        when it decides the sentence alone, None when the generator must read it (:func:`triage`)."""
        if self.band is None:
            raise ValueError(f"{self.path} has no calibrated cascade band: run bulkner train-selector --calibrate-only "
                             f"with the generator (--adapter/--model) to calibrate it")
        allowed = self.allowed(types)
        by_text = self.probs_by_text(sentences)
        probs = [by_text[text] for text in sentences]
        decided = [triage(p, allowed, self.band) for p in probs]
        return probs, [None if spans is None else [(k, s, e, self.types[t], p) for s, e, t, p in spans]
                       for k, spans in enumerate(decided)]

    def windows(self, sentences: Sequence[str], probs: Sequence[Probs], types: Sequence[str]) -> list[Window]:
        """For sentences :meth:`triage` left to the generator (their span scores ``probs``), the
        stretch of each that the generator writes (:func:`window`)."""
        allowed = self.allowed(types)
        return [window(text, p, allowed, self.band, self.types, self.threshold) for text, p in zip(sentences, probs, strict=True)]

    def allowed(self, types: Sequence[str]) -> list[int]:
        """Indices of the requested ``types`` this selector was trained on."""
        return [self.types.index(t) for t in types if t in self.types]

    def select(self, candidates: Sequence[Candidate], owners: Sequence[int], sentences: Sequence[str],
               types: Sequence[str], probs: Sequence[Probs] | None = None) -> tuple[list[float], list[bool], list[Added]]:
        """Scores and keep decisions of ``candidates`` (``candidates[i]`` is a span of
        ``sentences[owners[i]]``; those it cannot score — longer than ``MAX_WIDTH`` tokens, off
        word boundaries, of a type it was not trained on — get 1.0 and are kept) and the spans it
        adds, ``(sentence index, start, end, type, p)``, of ``types`` (boundary repairs included). Sentences with the same text
        are scored once and decided each on its own; ``probs``, when given, are the sentences'
        span probabilities already computed (:meth:`triage`)."""
        probs = dict(zip(sentences, probs)) if probs is not None else self.probs_by_text(sentences)
        allowed = self.allowed(types)
        scores: list[float] = [1.0] * len(candidates)
        keep = [True] * len(candidates)
        added: list[Added] = []
        grouped: dict[int, list[int]] = {}
        for i, (c, owner) in enumerate(zip(candidates, owners, strict=True)):
            if c.sentence != sentences[owner]:
                raise ValueError(f"candidate {i} is not a span of sentence {owner}")
            if c.type.name in self.types:
                grouped.setdefault(owner, []).append(i)
        for owner, text in enumerate(sentences):
            members = grouped.get(owner, [])
            proposed = [(candidates[i].start, candidates[i].end, self.types.index(candidates[i].type.name)) for i in members]
            found, kept, extra = decide(probs[text], proposed, allowed, self.threshold, self.add_threshold, self.repair)
            for i, p, ok in zip(members, found, kept):
                if p is not None:
                    scores[i], keep[i] = p, ok
            added += [(owner, s, e, self.types[t], p) for s, e, t, p in extra]
        return scores, keep, added

    def confirm(self, candidates: Sequence[Candidate], owners: Sequence[int], sentences: Sequence[str],
                known: dict[str, dict] | None = None) -> list[float | None]:
        """Each candidate's probability for its type (``candidates[i]`` is a span of
        ``sentences[owners[i]]``), None where it cannot score it; the caller keeps those at
        :attr:`threshold` (name propagation's proposals: nothing is added or repaired).
        ``known``: the ``Probs`` of sentences scored already (:meth:`triage`), by text."""
        known = known or {}
        probs = {text: known[text] for text in sentences if text in known}
        if missing := [text for text in sentences if text not in probs]:
            probs |= self.probs_by_text(missing)
        scores: list[float | None] = []
        for c, owner in zip(candidates, owners, strict=True):
            if c.sentence != sentences[owner]:
                raise ValueError(f"candidate is not a span of sentence {owner}")
            p = probs[c.sentence].get((c.start, c.end)) if c.type.name in self.types else None
            scores.append(None if p is None else p[1 + self.types.index(c.type.name)])
        return scores

    def fingerprint(self) -> str:
        """Kind, version, how it reads sentences, the directory by content, both thresholds used and the boundary repair."""
        from bulkner.checkpoints import content_id

        repair = f"-r{self.repair[0]:.4f},{self.repair[1]:.4f}" if self.repair else ""
        return f"selector-span-v{SELECTOR_VERSION}-e{READING}-{content_id(self.path)[:16]}-t{self.threshold:.4f}-a{self.add_threshold:.4f}{repair}"

    def close(self) -> None:
        """Release the model (and GPU memory)."""
        self._model = self._tokenizer = None
