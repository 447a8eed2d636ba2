"""The span selector: a span classifier over a small encoder that filters the generator's spans and
adds the ones it is sure of.

One encoder pass per sentence (no markers, no type text): every span that starts at a word start
and ends at a word end, at most ``MAX_WIDTH`` tokens long, gets a softmax over ``none`` and the
trained types from its first and last token states and a width embedding. At run time each span
the generator proposed is kept when its probability for its type is at least ``keep_threshold``;
then spans the generator did not propose, overlapping no kept span, are added greedily from the
most probable down while their probability is at least ``add_threshold``. Both thresholds are
calibrated together on the generator's spans in held-out training sentences
(:func:`train_span_selector`), for the F1 of generator plus selector.

Measured against the pair selector (:mod:`bulkner.selector`) on the default tagger's dev-set
generations: see README "Entity selector". A saved span selector is a directory like a pair
selector's (``selector.json`` with ``"kind": "span"``, the tokenizer, the fine-tuned encoder
weights in float16 over the packaged all-MiniLM-L6-v2, and ``head.safetensors`` with the width
embedding and the classifier).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from bulkner.schema import Span
from bulkner.selector import HEAD_FILE, META_FILE, SELECTOR_VERSION, Candidate, autocast, collate, pick_device, read_meta
from bulkner.selector_train import SelectorTrainConfig, split_rows, word_tokens

logger = logging.getLogger(__name__)

KIND = "span"
MAX_WIDTH = 24
"""Longest span the classifier scores, in encoder tokens (longer generator spans are kept unscored)."""
WIDTH_DIM = 32
HIDDEN = 256
KEEP_GRID = (0.0, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5)
ADD_GRID = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.01)
"""Thresholds tried at calibration; an add threshold over 1 adds nothing."""

Probs = dict[tuple[int, int], list[float]]
"""``(start, end)`` char span of a sentence -> ``[p_none, p_type1, ...]``."""


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
    """Tokenized rows and, per text, its scorable spans: an int array of rows ``(first token, last
    token, start char, end char)``."""
    import numpy as np

    enc = tokenizer(list(texts), truncation=True, max_length=max_length, return_offsets_mapping=True)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    rows, spans = [], []
    for n, text in enumerate(texts):
        words = word_tokens(text)
        starts, ends = {s for s, _ in words}, {e for _, e in words}
        offsets = enc["offset_mapping"][n]
        firsts = np.array([(k, s) for k, (s, e) in enumerate(offsets) if e > s and s in starts], dtype=np.int64).reshape(-1, 2)
        lasts = np.array([(k, e) for k, (s, e) in enumerate(offsets) if e > s and e in ends], dtype=np.int64).reshape(-1, 2)
        i, j = np.nonzero((firsts[:, :1] <= lasts[:, 0]) & (lasts[:, 0] < firsts[:, :1] + MAX_WIDTH))
        spans.append(np.column_stack([firsts[i, 0], lasts[j, 0], firsts[i, 1], lasts[j, 1]]))
        rows.append({k: enc[k][n] for k in keys})
    return rows, spans


def span_probs(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, device: str, batch_size: int = 32) -> list[Probs]:
    """Class probabilities of every scorable span of each text, in input order (sorted-length batches)."""
    import numpy as np
    import torch

    order = sorted(range(len(texts)), key=lambda n: len(texts[n]))
    out: list[Probs] = [{} for _ in texts]
    model.eval()
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            chunk = order[b : b + batch_size]
            rows, spans = encode(tokenizer, [texts[n] for n in chunk], max_length)
            index = np.concatenate([np.column_stack([np.full(len(f), r), f[:, :2]]) for r, f in enumerate(spans)])
            if not len(index):
                continue
            with autocast(device, bf16=True):
                logits = model(collate(tokenizer, rows, device), torch.from_numpy(index).to(device))
            probs = torch.softmax(logits.float(), -1).tolist()
            at = 0
            for r, found in enumerate(spans):
                out[chunk[r]] = dict(zip(zip(found[:, 2].tolist(), found[:, 3].tolist()), probs[at : at + len(found)]))
                at += len(found)
    return out


def decide(probs: Probs, proposed: Sequence[tuple[int, int, int]], allowed: Sequence[int], keep_threshold: float,
           add_threshold: float) -> tuple[list[float | None], list[tuple[int, int, int, float]]]:
    """One sentence: each proposed ``(start, end, type index)``'s probability (None: not scorable,
    kept), and the added spans ``(start, end, type index, p)``: the most probable first, each of a
    type in ``allowed``, at least ``add_threshold``, overlapping no kept or added span."""
    scores = [probs[(s, e)][1 + t] if (s, e) in probs else None for s, e, t in proposed]
    taken = [(s, e) for (s, e, _), p in zip(proposed, scores) if p is None or p >= keep_threshold]
    added = []
    if add_threshold <= 1.0:
        ranked = sorted(((p[1 + t], s, e, t) for (s, e), p in probs.items() for t in allowed if p[1 + t] >= add_threshold), reverse=True)
        for p, s, e, t in ranked:
            if not any(s < b and a < e for a, b in taken):
                taken.append((s, e))
                added.append((s, e, t, p))
    return scores, added


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
            raise ValueError(f"{self.path / META_FILE} is a span selector without {', '.join(missing)}: not written by train-selector --kind span")
        self.threshold = float(self.meta["threshold"] if threshold is None else threshold)
        self.add_threshold = float(self.meta["add_threshold"])
        self.types = list(self.meta["types"])
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None
        self._tokenizer: Any = None

    def setup(self) -> None:
        """Load the encoder, the classifier and the tokenizer."""
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        from bulkner.selector import load_encoder

        self.device = pick_device(self.device)
        self._tokenizer = AutoTokenizer.from_pretrained(self.path)
        model = span_model(load_encoder(self.path, self.meta), len(self.types))
        model.head().load_state_dict({k: v.float() for k, v in load_file(str(self.path / self.meta["head"])).items()})
        self._model = model.to(self.device).eval()
        logger.info("span selector %s loaded on %s (keep %.3f, add %.3f)", self.path, self.device, self.threshold, self.add_threshold)

    def probs(self, texts: Sequence[str]) -> list[Probs]:
        if self._model is None:
            self.setup()
        return span_probs(self._model, self._tokenizer, texts, self.meta["max_length"], self.device, self.batch_size)

    def select(self, candidates: Sequence[Candidate], owners: Sequence[int], sentences: Sequence[str],
               types: Sequence[str]) -> tuple[list[float], list[bool], list[tuple[int, int, int, str, float]]]:
        """Scores and keep decisions of ``candidates`` (``candidates[i]`` is a span of
        ``sentences[owners[i]]``; those it cannot score — longer than ``MAX_WIDTH`` tokens, off
        word boundaries, of a type it was not trained on — get 1.0 and are kept) and the spans it
        adds, ``(sentence index, start, end, type, p)``, of ``types``. Sentences with the same text
        are scored once and decided each on its own."""
        texts = list(dict.fromkeys(sentences))
        probs = dict(zip(texts, self.probs(texts)))
        allowed = [self.types.index(t) for t in types if t in self.types]
        scores: list[float] = [1.0] * len(candidates)
        keep = [True] * len(candidates)
        added: list[tuple[int, int, int, str, float]] = []
        grouped: dict[int, list[int]] = {}
        for i, (c, owner) in enumerate(zip(candidates, owners, strict=True)):
            if c.sentence != sentences[owner]:
                raise ValueError(f"candidate {i} is not a span of sentence {owner}")
            if c.type.name in self.types:
                grouped.setdefault(owner, []).append(i)
        for owner, text in enumerate(sentences):
            members = grouped.get(owner, [])
            proposed = [(candidates[i].start, candidates[i].end, self.types.index(candidates[i].type.name)) for i in members]
            found, extra = decide(probs[text], proposed, allowed, self.threshold, self.add_threshold)
            for i, p in zip(members, found):
                if p is not None:
                    scores[i], keep[i] = p, p >= self.threshold
            added += [(owner, s, e, self.types[t], p) for s, e, t, p in extra]
        return scores, keep, added

    def fingerprint(self) -> str:
        """Kind, version, the directory by content, and both thresholds used."""
        from bulkner.checkpoints import content_id

        return f"selector-span-v{SELECTOR_VERSION}-{content_id(self.path)[:16]}-t{self.threshold:.4f}-a{self.add_threshold:.4f}"

    def close(self) -> None:
        self._model = self._tokenizer = None


def combined_f1(items: Sequence[tuple[Probs, list, list[int], set]], keep_threshold: float, add_threshold: float) -> float:
    """F1 of generator plus selector over held-out sentences ``(probs, proposed, allowed, gold)``;
    gold and proposed as ``(start, end, type index)``."""
    tp = predicted = positives = 0
    for probs, proposed, allowed, gold in items:
        scores, added = decide(probs, proposed, allowed, keep_threshold, add_threshold)
        final = {(s, e, t) for (s, e, t), p in zip(proposed, scores) if p is None or p >= keep_threshold}
        final |= {(s, e, t) for s, e, t, _ in added}
        tp += len(final & gold)
        predicted += len(final)
        positives += len(gold)
    return 2 * tp / (predicted + positives) if predicted + positives else 0.0


def calibrate_span(items: Sequence[tuple[Probs, list, list[int], set]]) -> dict:
    """The (keep, add) thresholds of ``KEEP_GRID`` x ``ADD_GRID`` with the best F1 on ``items``;
    ties go to adding less, then to dropping less."""
    grid = {(k, a): combined_f1(items, k, a) for k in KEEP_GRID for a in ADD_GRID}
    (keep, add), f1 = max(grid.items(), key=lambda kv: (round(kv[1], 9), kv[0][1], -kv[0][0]))
    return {"threshold": keep, "add_threshold": add, "f1": f1, "f1_without_selector": combined_f1(items, 0.0, 2.0),
            "f1_filter_only": max(grid[(k, 1.01)] for k in KEEP_GRID), "sentences": len(items)}


def train_span_selector(config: SelectorTrainConfig, predictions: Mapping[str, Sequence[Span]] | None = None, progress: bool = True) -> dict:
    """Train a span selector on the ``config.sources`` sentences (cross-entropy over every scorable
    span; a source's unannotated types are masked out, not counted as negatives), calibrate both
    thresholds on the held-out sentences with the generator's ``predictions`` (without them: on the
    selector alone, nothing to keep), save to ``config.out``; returns the report."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModel, AutoTokenizer

    from bulkner.selector import default_encoder_dir, save_selector

    started = time.time()
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    rows, dev_rows, gold_counts = split_rows(config, rng)
    types = sorted({t.name for _, _, ts in rows + dev_rows for t in ts})
    device = pick_device(config.device)
    encoder_dir = config.encoder or str(default_encoder_dir())
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    encoder = AutoModel.from_pretrained(encoder_dir)
    encoder.get_input_embeddings().requires_grad_(False)
    model = span_model(encoder, len(types)).to(device)
    trained = [q for q in encoder.parameters() if q.requires_grad]
    head = list(model.head().parameters())
    optimizer = torch.optim.AdamW([{"params": trained, "lr": config.lr}, {"params": head, "lr": config.head_lr}], weight_decay=0.01)
    per_epoch = -(-len(rows) // config.batch_size)
    total = config.epochs * per_epoch
    warmup = max(1, total // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1.0 - s / total))
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    step = 0
    with open(out / "train_log.jsonl", "w", encoding="utf-8") as log, tqdm(total=total, disable=not progress, desc="span selector steps") as bar:
        for epoch in range(config.epochs):
            order = list(range(len(rows)))
            random.Random(config.seed * 1_000_003 + epoch).shuffle(order)
            model.train()
            for b in range(0, len(order), config.batch_size):
                chunk = [rows[k] for k in order[b : b + config.batch_size]]
                loss, spans = step_loss(model, tokenizer, chunk, types, config, device)
                if loss is None:
                    continue
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trained + head, 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                bar.update(1)
                if step % config.log_every == 0 or step == total:
                    log.write(json.dumps({"step": step, "epoch": epoch, "loss": float(loss.detach()), "spans": spans, "lr": scheduler.get_last_lr()[0]}) + "\n")
                    log.flush()
        with torch.no_grad():  # calibrate what is saved: the trained weights as float16
            for q in trained:
                q.copy_(q.half().float())
        calibration = held_out_calibration(lambda texts: span_probs(model, tokenizer, texts, config.max_length, device), dev_rows, types, predictions)
        log.write(json.dumps({"calibration": calibration}) + "\n")
    meta = {"version": SELECTOR_VERSION, "kind": KIND, "head": HEAD_FILE, "max_length": config.max_length, "types": types,
            "threshold": calibration["threshold"], "add_threshold": calibration["add_threshold"], "max_width": MAX_WIDTH}
    meta["report"] = {"config": {k: (str(v) if k in ("sources", "dev_sources") else v) for k, v in asdict(config).items()},
                      "encoder": encoder_dir, "steps": step, "train_sentences": len(rows), "gold_by_type": gold_counts,
                      "dev_sentences": len(dev_rows), "calibration": calibration, "threshold": calibration["threshold"],
                      "dev_f1": calibration["f1"], "seconds": round(time.time() - started, 1), "device": device}
    save_selector(out, encoder, tokenizer, model.head(), meta, base=encoder_dir)
    logger.info("span selector saved to %s: keep %.3f add %.3f, held-out F1 %.3f", out, calibration["threshold"], calibration["add_threshold"], calibration["f1"])
    return meta["report"]


def step_loss(model: Any, tokenizer: Any, chunk: Sequence, types: Sequence[str], config: SelectorTrainConfig, device: str) -> tuple[Any, int]:
    """Mean cross-entropy over every scorable span of ``chunk``'s sentences ``(sentence, gold, types)``."""
    import torch

    rows, spans = encode(tokenizer, [s.text for s, _, _ in chunk], config.max_length)
    index, labels = [], []
    unannotated = torch.zeros(len(chunk), 1 + len(types), dtype=torch.bool)  # per sentence: the types its source does not annotate
    for r, ((sentence, gold, annotated), found) in enumerate(zip(chunk, spans)):
        label = {(g.start, g.end): 1 + types.index(g.type) for g in gold}
        unannotated[r, [1 + k for k, t in enumerate(types) if t not in {a.name for a in annotated}]] = True
        for i, j, s, e in found.tolist():
            index.append((r, i, j))
            labels.append(label.get((s, e), 0))
    if not index:
        return None, 0
    index = torch.tensor(index, device=device)
    with autocast(device, config.bf16):
        logits = model(collate(tokenizer, rows, device), index).float()
    mask = unannotated.to(device)[index[:, 0]]
    loss = torch.nn.functional.cross_entropy(logits.masked_fill(mask, -1e4), torch.tensor(labels, device=device))
    return loss, len(index)


def held_out_calibration(probs_of: Callable[[list[str]], list[Probs]], dev_rows: Sequence, types: Sequence[str], predictions) -> dict:
    """Both thresholds calibrated on the held-out sentences (:func:`calibrate_span`), their
    probabilities from ``probs_of(texts)``; without ``predictions`` nothing is filtered (keep 0)."""
    probs = probs_of([s.text for s, _, _ in dev_rows])
    items = []
    for (sentence, gold, annotated), p in zip(dev_rows, probs):
        names = [t.name for t in annotated]
        proposed = [(sp.start, sp.end, types.index(sp.type)) for sp in dict.fromkeys((predictions or {}).get(sentence.key, ()))
                    if sp.type in names and 0 <= sp.start < sp.end <= len(sentence.text)]
        items.append((p, proposed, [types.index(n) for n in names], {(g.start, g.end, types.index(g.type)) for g in gold}))
    calibration = calibrate_span(items) | {"on": "generator" if predictions else "selector alone"}
    if not predictions:
        calibration["threshold"] = 0.0
    return calibration


def recalibrate_span(config: SelectorTrainConfig, predictions: Mapping[str, Sequence[Span]] | None = None) -> dict:
    """Calibrate both thresholds of the span selector at ``config.out`` again, on the held-out
    sentences of the same sources and seed (e.g. after the generator changed); rewrites them in
    ``selector.json`` and returns the calibration."""
    _, dev_rows, _ = split_rows(config, random.Random(config.seed))
    selector = SpanSelector(config.out, device=config.device)
    calibration = held_out_calibration(selector.probs, dev_rows, selector.types, predictions)  # at the selector's own max_length
    selector.close()
    meta = read_meta(config.out)
    meta |= {"threshold": calibration["threshold"], "add_threshold": calibration["add_threshold"]}
    meta["report"] |= {"threshold": calibration["threshold"], "dev_f1": calibration["f1"], "calibration": calibration}
    (Path(config.out) / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
    return calibration
