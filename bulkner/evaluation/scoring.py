"""Score predicted entity mentions against gold mentions: strict and relaxed precision/recall/F1.

A mention is ``(doc_id, passage_index, start, end, type)`` with ``[start, end)`` code-point offsets
into the passage text. Both inputs are treated as sets: duplicates collapse.

- **strict**: a prediction is a true positive when a gold mention has the same five fields.
- **relaxed**: a prediction and a gold mention may be paired when they are in the same passage, have
  the same type and their ranges share a character (``max(starts) < min(ends)``) or are identical
  (so an empty span matches itself and every strict hit is a relaxed hit). Pairs are a maximum
  bipartite matching per (passage, type), found with augmenting paths, so each gold and each
  prediction is used at most once and ``tp + fp`` / ``tp + fn`` are the numbers of distinct
  predicted / gold mentions.

Micro scores pool the counts of all types; macro scores are the unweighted mean of per-type scores
over the types that have any gold or predicted mention. Any 0/0 is 0.0.
"""

from __future__ import annotations

import logging
from bisect import bisect_left, bisect_right
from collections import defaultdict
from typing import Iterable, NamedTuple, Sequence

logger = logging.getLogger(__name__)


class Mention(NamedTuple):
    """A typed span ``[start, end)`` of one passage of one document."""

    doc_id: str
    passage_index: int
    start: int
    end: int
    type: str


def _as_mentions(items: Iterable[tuple], types: Sequence[str] | None) -> set[Mention]:
    """Normalise tuples to a set of Mention, keeping only ``types`` when given."""
    wanted = None if types is None else set(types)
    mentions = set()
    for item in items:
        if len(item) != 5:
            raise ValueError(f"a mention is (doc_id, passage_index, start, end, type), got {item!r}")
        m = Mention(*item)
        if m.end < m.start:
            raise ValueError(f"mention {m} ends before it starts")
        if wanted is None or m.type in wanted:
            mentions.add(m)
    return mentions


def prf(tp: int, fp: int, fn: int) -> dict:
    """Precision, recall and F1 of counts; 0/0 gives 0.0."""
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f}


def _overlap(a: Mention, b: Mention) -> bool:
    """Whether two ranges share a character, or are identical (empty spans included)."""
    return max(a.start, b.start) < min(a.end, b.end) or (a.start, a.end) == (b.start, b.end)


def _augment(root: int, edges: list[list[int]], owner: dict[int, int]) -> bool:
    """Find an augmenting path from gold ``root`` (iterative DFS) and flip it into ``owner``."""
    free = next((j for j in edges[root] if j not in owner), None)
    if free is not None:  # shortcut: most roots have a free neighbour
        owner[free] = root
        return True
    seen: set[int] = set()
    stack = [(root, iter(edges[root]))]
    via: list[int] = []  # via[k]: the prediction through which stack[k + 1] was reached
    while stack:
        j = next((j for j in stack[-1][1] if j not in seen), None)
        if j is None:
            stack.pop()
            if via:
                via.pop()
        elif j in owner:
            seen.add(j)
            via.append(j)
            stack.append((owner[j], iter(edges[owner[j]])))
        else:
            for (i, _), k in zip(stack, via + [j]):
                owner[k] = i
            return True
    return False


def _max_matching(gold: list[Mention], predicted: list[Mention]) -> int:
    """Size of a maximum matching between overlapping gold and predicted mentions (Kuhn's algorithm).

    Only predictions starting in ``[gold.start - longest prediction, gold.end]`` can overlap a gold
    mention, so candidates come from a bisected window of the predictions sorted by start.
    """
    predicted = sorted(predicted, key=lambda p: p.start)
    starts, longest = [p.start for p in predicted], max(p.end - p.start for p in predicted)
    window = [range(bisect_left(starts, g.start - longest), bisect_right(starts, g.end)) for g in gold]
    edges = [[j for j in js if _overlap(g, predicted[j])] for g, js in zip(gold, window)]
    owner: dict[int, int] = {}  # prediction index -> gold index matched to it
    return sum(_augment(i, edges, owner) for i in range(len(gold)) if edges[i])


def _relaxed_tp(gold: set[Mention], predicted: set[Mention]) -> dict[str, int]:
    """True positives per type under relaxed matching."""
    groups: dict[tuple, tuple[list, list]] = defaultdict(lambda: ([], []))
    for m in gold:
        groups[m.doc_id, m.passage_index, m.type][0].append(m)
    for m in predicted:
        groups[m.doc_id, m.passage_index, m.type][1].append(m)
    tp: dict[str, int] = defaultdict(int)
    for (_, _, kind), (g, p) in groups.items():
        if g and p:
            tp[kind] += _max_matching(g, p)
    return tp


def _table(gold: set[Mention], predicted: set[Mention], tp: dict[str, int], types: Sequence[str]) -> dict:
    """Micro, macro and per-type scores from per-type true-positive counts."""
    n_gold = {t: 0 for t in types}
    n_pred = {t: 0 for t in types}
    for m in gold:
        n_gold[m.type] += 1
    for m in predicted:
        n_pred[m.type] += 1
    per_type = {}
    for t in types:
        counts = {"tp": tp.get(t, 0), "fp": n_pred[t] - tp.get(t, 0), "fn": n_gold[t] - tp.get(t, 0)}
        per_type[t] = {**prf(counts["tp"], counts["fp"], counts["fn"]), **counts, "support": n_gold[t]}
    total = {k: sum(row[k] for row in per_type.values()) for k in ("tp", "fp", "fn")}
    active = [row for t, row in per_type.items() if n_gold[t] or n_pred[t]]
    macro = {k: sum(row[k] for row in active) / len(active) if active else 0.0 for k in ("precision", "recall", "f1")}
    return {"micro": {**prf(total["tp"], total["fp"], total["fn"]), **total}, "macro": macro, "per_type": per_type}


def score(gold: Iterable[tuple], predicted: Iterable[tuple], types: Sequence[str] | None = None) -> dict:
    """Strict and relaxed micro/macro/per-type P, R, F1 of ``predicted`` against ``gold``.

    ``types``: the types to score, in table order; mentions of other types are ignored. By default,
    every type seen in gold or predictions, sorted. Returns a JSON-able dict
    ``{"strict"|"relaxed": {"micro": {precision, recall, f1, tp, fp, fn}, "macro": {precision,
    recall, f1}, "per_type": {type: {precision, recall, f1, tp, fp, fn, support}}}}``.
    """
    if types is not None and len(set(types)) != len(types):
        raise ValueError(f"types must not repeat: {list(types)}")
    g, p = _as_mentions(gold, types), _as_mentions(predicted, types)
    names = list(types) if types is not None else sorted({m.type for m in g | p})
    strict_tp: dict[str, int] = defaultdict(int)
    for m in g & p:
        strict_tp[m.type] += 1
    return {"strict": _table(g, p, strict_tp, names), "relaxed": _table(g, p, _relaxed_tp(g, p), names)}


def format_table(result: dict) -> str:
    """Fixed-width text table of a ``score`` result: per-type rows, micro and macro, in percent."""
    strict, relaxed = result["strict"], result["relaxed"]
    width = max([len(t) for t in strict["per_type"]] + [5])
    head = f"{'type':<{width}} {'support':>7}  " + "  ".join(
        f"{name + ' ' + k:>10}" for name in ("strict", "relaxed") for k in ("P", "R", "F1")
    )
    rows = [(t, str(strict["per_type"][t]["support"]), strict["per_type"][t], relaxed["per_type"][t]) for t in strict["per_type"]]
    support = str(sum(row["support"] for row in strict["per_type"].values()))
    rows += [("micro", support, strict["micro"], relaxed["micro"]), ("macro", "", strict["macro"], relaxed["macro"])]
    lines = [head, "-" * len(head)]
    for name, n, s, r in rows:
        cells = "  ".join(f"{100 * d[k]:>10.2f}" for d in (s, r) for k in ("precision", "recall", "f1"))
        lines.append(f"{name:<{width}} {n:>7}  {cells}")
    return "\n".join(lines)
