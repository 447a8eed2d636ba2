"""An HTML report of an output directory: one self-contained file (CSS, JS and SVG plots inline).

It shows the rows of each table, entity counts by type, the most frequent mentions of each type,
throughput per shard (from the completion markers), rejects by reason, the run's fingerprint and a
viewer of a sample of tagged sentences with nested entities drawn as stacked bars under the text.
Everything is counted over the finished shards as written (``read_table``'s view: a document
replaced by a later shard counts in both). Tables are read shard by shard; what is held across
shards is the counts of distinct ``(type, text)`` mentions and the sampled sentence keys, so the
page stays small for a run of millions of sentences.

Every text from the corpus, the tables or the markers is HTML-escaped; the page's Content Security
Policy allows no network access and runs only its own script (by hash).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import os
import re
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import pairwise
from pathlib import Path
from string import Template

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bulkner.schema import TABLES
from bulkner.outputs.tables import finished_files, finished_shards, read_shard
from bulkner.outputs.writer import FINGERPRINT, OutputDir

log = logging.getLogger(__name__)

KEY = ["doc_id", "doc_version", "passage_index", "sentence_index"]
"""The columns naming a sentence within a shard."""
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f")
COMPACT_ROWS = 1_000_000
"""Re-aggregate the distinct mentions held across shards once this many rows are pending."""


@dataclass(frozen=True)
class Tagged:
    """A sentence of the viewer; span offsets ``(start, end, type, score)`` are into ``text``."""

    shard: str
    key: str
    text: str
    spans: tuple[tuple[int, int, str, float], ...]


@dataclass(frozen=True)
class Report:
    """What the page shows, counted over the finished shards of ``out``."""

    out: str
    markers: dict[str, dict]
    """Completion marker of each finished shard, in natural order."""
    rows: dict[str, int]
    """Rows per table."""
    entities_by_type: dict[str, int] | None
    """None when the run wrote no entities table (``bulkner split``)."""
    top_mentions: dict[str, list[tuple[str, int]]]
    """Per type, its most frequent mention texts with their counts (most frequent first)."""
    top_concepts: dict[str, list[tuple[str, int]]]
    """Per type, its most frequent concept ids, each labelled with its most frequent mention text
    (``MESH:D003920 diabetes``), with their mention counts (most frequent first)."""
    rejects_by_reason: dict[str, int]
    """Rejects by ``stage/reason``, as the markers count them."""
    fingerprint: dict | None
    candidates: int
    """Sentences with entities, the population the viewer's sample is drawn from."""
    sentences: tuple[Tagged, ...]


def _shard_tables(directory: OutputDir, out: str, table: str, columns: list[str]) -> Iterator[tuple[str, pa.Table]]:
    """``(shard, table)`` of each finished shard that has ``table``, in natural order."""
    for shard in finished_shards(out, table):
        yield shard, read_shard(directory, table, shard, columns)


def _rows(directory: OutputDir, out: str, table: str) -> int:
    total = 0
    for shard in finished_shards(out, table):
        with directory.fs.open_input_file(directory.path(table, f"{shard}.parquet")) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def _fingerprint(directory: OutputDir) -> dict | None:
    return directory.read_json(directory.path(FINGERPRINT))


def _mentions(directory: OutputDir, out: str, top: int) -> tuple[dict[str, int], dict[str, list], dict[str, list]]:
    """Entities by type, each type's ``top`` most frequent mention texts and its ``top`` most
    frequent concept ids (labelled as ``Report.top_concepts`` says)."""
    keys = ["type", "text", "concept_id"]
    held: list[pa.Table] = []

    def compact(parts: list[pa.Table]) -> pa.Table:
        merged = pa.concat_tables(parts).group_by(keys, use_threads=False).aggregate([("n", "sum")])
        return merged.rename_columns({"n_sum": "n"}).select([*keys, "n"])

    for _, table in _shard_tables(directory, out, "entities", keys):
        counted = table.group_by(keys, use_threads=False).aggregate([([], "count_all")])
        held.append(counted.rename_columns({"count_all": "n"}).select([*keys, "n"]))
        if sum(t.num_rows for t in held) > COMPACT_ROWS:
            held = [compact(held)]
    if not held:
        return {}, {}, {}
    mentions = compact(held)
    by_type = mentions.group_by("type").aggregate([("n", "sum")]).sort_by([("n_sum", "descending"), ("type", "ascending")])
    counts = dict(zip(by_type["type"].to_pylist(), by_type["n_sum"].to_pylist()))
    tops, concepts = {}, {}
    for name in counts:
        own = mentions.filter(pc.equal(mentions["type"], name))
        texts = own.group_by("text").aggregate([("n", "sum")]).sort_by([("n_sum", "descending"), ("text", "ascending")]).slice(0, top)
        tops[name] = list(zip(texts["text"].to_pylist(), texts["n_sum"].to_pylist()))
        concepts[name] = _top_concepts(own.filter(pc.is_valid(own["concept_id"])).to_pylist(), top)
    return counts, tops, concepts


def _top_concepts(rows: list[dict], top: int) -> list[tuple[str, int]]:
    """The ``top`` concepts of ``(text, concept_id, n)`` rows by mentions, each labelled with its
    most frequent text."""
    total: Counter = Counter()
    label: dict[str, str] = {}
    for r in sorted(rows, key=lambda r: (-r["n"], r["text"])):
        total[r["concept_id"]] += r["n"]
        label.setdefault(r["concept_id"], r["text"])
    return [(f"{concept} {label[concept]}", n) for concept, n in sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]


def _rejects(directory: OutputDir, out: str) -> dict[str, int]:
    found: Counter = Counter()
    for _, table in _shard_tables(directory, out, "rejects", ["stage", "reason"]):
        counted = table.group_by(["stage", "reason"]).aggregate([([], "count_all")])
        for row in counted.to_pylist():
            found[f"{row['stage']}/{row['reason']}"] += row["count_all"]
    return dict(sorted(found.items(), key=lambda kv: (-kv[1], kv[0])))


def _sample(directory: OutputDir, out: str, size: int, seed: int) -> tuple[int, pa.Table | None]:
    """How many sentences have entities, and ``size`` of them drawn uniformly (bottom-k of seeded
    random priorities, shard by shard) in shard and key order: columns KEY, ``shard``, ``rank``."""
    rng = np.random.default_rng(seed)
    kept, candidates = None, 0
    for rank, (shard, table) in enumerate(_shard_tables(directory, out, "entities", KEY)):
        keys = table.group_by(KEY).aggregate([]).sort_by([(k, "ascending") for k in KEY])  # sorted: reproducible
        candidates += keys.num_rows
        keys = keys.append_column("priority", pa.array(rng.random(keys.num_rows)))
        keys = keys.append_column("rank", pa.repeat(pa.scalar(rank, pa.int32()), keys.num_rows))
        keys = keys.append_column("shard", pa.repeat(pa.scalar(shard), keys.num_rows))
        kept = (keys if kept is None else pa.concat_tables([kept, keys])).sort_by("priority").slice(0, size)
    if kept is None:
        return 0, None
    return candidates, kept.sort_by([("rank", "ascending"), *((k, "ascending") for k in KEY)])


def _chosen_rows(directory: OutputDir, out: str, table: str, columns: list[str], chosen: pa.Table) -> Iterator[tuple[tuple, dict]]:
    """``((shard, *KEY), row)`` of the rows of ``table`` that belong to the ``chosen`` sentences."""
    wanted = set(chosen["shard"].to_pylist())
    for shard, rows in _shard_tables(directory, out, table, KEY + columns):
        if shard not in wanted:
            continue
        mine = chosen.filter(pc.equal(chosen["shard"], shard)).select(KEY)
        rows = rows.filter(pc.is_in(rows["doc_id"], value_set=pc.unique(mine["doc_id"])))
        for row in rows.join(mine, keys=KEY, join_type="inner").to_pylist():
            yield (shard, *(row[k] for k in KEY)), row


def _tagged(directory: OutputDir, out: str, chosen: pa.Table) -> tuple[Tagged, ...]:
    """The text and entities of the ``chosen`` sentences, in the order of ``chosen``."""
    texts = {key: (row["start"], row["text"]) for key, row in _chosen_rows(directory, out, "sentences", ["start", "text"], chosen)}
    spans: dict[tuple, list] = {}
    for key, row in _chosen_rows(directory, out, "entities", ["start", "end", "type", "score"], chosen):
        spans.setdefault(key, []).append((row["start"], row["end"], row["type"], row["score"]))
    result = []
    for row in chosen.to_pylist():
        key = (row["shard"], *(row[k] for k in KEY))
        if key not in texts:
            log.warning("shard %s: sentence %s has entities but no row in the sentences table", key[0], key[1:])
            continue
        start, text = texts[key]
        found = sorted((s - start, e - start, t, score) for s, e, t, score in spans[key])
        result.append(Tagged(row["shard"], f"{row['doc_id']}/{row['passage_index']}/{row['sentence_index']}", text, tuple(found)))
    return tuple(result)


def build_report(out: str, sentences: int = 500, seed: int = 0, top: int = 20) -> Report:
    """Count and sample the finished shards of the output directory ``out`` (a path or URL)."""
    if sentences < 0:
        raise ValueError(f"sentences must be >= 0, got {sentences}")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    directory = OutputDir(out)
    markers = {shard: directory.done(shard) or {} for shard in directory.finished()}
    rows = {table: _rows(directory, out, table) for table in TABLES}
    tagged = bool(finished_files(out, "entities"))
    by_type, tops, concepts = _mentions(directory, out, top) if tagged else (None, {}, {})
    candidates, chosen = _sample(directory, out, sentences, seed) if tagged else (0, None)
    viewed = _tagged(directory, out, chosen) if chosen is not None and chosen.num_rows else ()
    return Report(out, markers, rows, by_type, tops, concepts, _rejects(directory, out), _fingerprint(directory), candidates, viewed)


# ---------------------------------------------------------------- rendering


def esc(value: object) -> str:
    """``value`` as HTML text or attribute value."""
    return html.escape(str(value), quote=True)


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def bar_chart(items: Sequence[tuple[str, float]], colors: Sequence[str], unit: str = "", label: str = "", width: int = 760) -> str:
    """A horizontal bar chart (inline SVG), one bar per ``(label, value)``, in the given order."""
    left, right, row = round(width * 0.35), 90, 20
    height = row * len(items) + 6
    biggest = max((v for _, v in items), default=0) or 1
    parts = [f'<svg class="chart" role="img" aria-label="{esc(label)}" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for i, ((name, value), color) in enumerate(zip(items, colors)):
        y = 3 + i * row
        w = round((width - left - right) * max(value, 0) / biggest, 1)
        shown = name if len(name) <= left // 8 else name[: left // 8 - 1] + "…"
        parts.append(
            f'<g><title>{esc(name)}: {_number(value)}{esc(unit)}</title>'
            f'<text class="label" x="{left - 6}" y="{y + 12}" text-anchor="end">{esc(shown)}</text>'
            f'<rect class="bar" x="{left}" y="{y}" width="{w}" height="15" fill="{color}"></rect>'
            f'<text class="value" x="{left + w + 4}" y="{y + 12}">{_number(value)}{esc(unit)}</text></g>'
        )
    return "".join(parts) + "</svg>"


def column_chart(items: Sequence[tuple[str, float]], color: str, unit: str = "", label: str = "") -> str:
    """A vertical bar chart (inline SVG) for many bars: names only in each bar's tooltip."""
    width, height, top = 760, 180, 16
    biggest = max((v for _, v in items), default=0) or 1
    step = width / max(len(items), 1)
    head = (f'<svg class="chart" role="img" aria-label="{esc(label)}" width="{width}" height="{height + top}" '
            f'viewBox="0 0 {width} {height + top}"><text class="value" x="0" y="11">max {_number(biggest)}{esc(unit)}</text>')
    parts = [head]
    for i, (name, value) in enumerate(items):
        h = round(height * max(value, 0) / biggest, 1)
        parts.append(f'<rect class="bar" x="{round(i * step, 2)}" y="{top + height - h}" width="{max(round(step * 0.85, 2), 0.5)}" '
                     f'height="{h}" fill="{color}"><title>{esc(name)}: {_number(value)}{esc(unit)}</title></rect>')
    return "".join(parts) + "</svg>"


def chart(items: Sequence[tuple[str, float]], colors: Sequence[str], unit: str = "", label: str = "", most: int = 60) -> str:
    """Named horizontal bars up to ``most`` items, columns beyond."""
    return bar_chart(items, colors, unit, label) if len(items) <= most else column_chart(items, colors[0], unit, label)


def levels(spans: Sequence[tuple[int, int]]) -> list[int]:
    """The row of each span under the text: by start, longest first, each span on the lowest row
    where it overlaps no span placed before (displaCy's span slots; as few rows as the deepest
    overlap needs). Touching spans (``end == start``) share a row."""
    order = sorted(range(len(spans)), key=lambda i: (spans[i][0], -spans[i][1]))
    ends: list[int] = []  # per row, the end of its last span
    result = [0] * len(spans)
    for i in order:
        start, end = spans[i]
        row = next((r for r, last in enumerate(ends) if last <= start), len(ends))
        ends[row:row + 1] = [end]
        result[i] = row
    return result


def pieces(text: str, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``text`` cut at every span boundary and after every run of whitespace, as ``(start, end)``."""
    cuts = {0, len(text)} | {m.end() for m in re.finditer(r"\s+", text)}
    cuts |= {c for s, e in spans for c in (s, e) if 0 <= c <= len(text)}
    return list(pairwise(sorted(cuts)))


def sentence_html(sentence: Tagged, type_class: dict[str, str]) -> str:
    """A sentence of the viewer: its text in pieces, each with one bar per entity covering it."""
    spans = [s for s in sentence.spans if 0 <= s[0] < s[1] <= len(sentence.text)]
    rows = levels([(s, e) for s, e, _, _ in spans])
    search = " ".join([sentence.text, *(f"{t}: {sentence.text[s:e]}" for s, e, t, _ in spans)]).lower()
    out = [f'<div class="sent" data-q="{esc(search)}" style="--depth:{max(rows, default=-1) + 1}">',
           f'<div class="meta">{esc(sentence.key)} <span class="shard">{esc(sentence.shard)}</span></div><div class="text">']
    for a, b in pieces(sentence.text, [(s, e) for s, e, _, _ in spans]):
        bars = []
        for (s, e, kind, score), row in sorted(zip(spans, rows), key=lambda pair: pair[1]):
            if s <= a and b <= e:
                tip = f'{kind} {score:.2f}: {sentence.text[s:e]}'
                start, name = (" start", f'<span class="lab">{esc(kind)}</span>') if a == s else ("", "")
                bars.append(f'<span class="bar {type_class[kind]}{start}" style="--level:{row}" title="{esc(tip)}">{name}</span>')
        out.append(f'<span class="seg">{esc(sentence.text[a:b])}{"".join(bars)}</span>')
    return "".join(out) + "</div></div>"


def _asset(name: str) -> str:
    return (resources.files("bulkner") / "data" / "report" / name).read_text(encoding="utf-8")


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _summary(report: Report) -> str:
    timed = [m for m in report.markers.values() if isinstance(m.get("seconds"), (int, float))]
    seconds = sum(m["seconds"] for m in timed)
    sentences = sum(m.get("sentences") or 0 for m in timed)
    rows = [("finished shards", len(report.markers)), *((f"{t} rows", n) for t, n in report.rows.items()),
            ("seconds (sum over shards)", round(seconds, 1)), ("sentences/s (overall)", round(sentences / seconds, 1) if seconds else "–")]
    return "".join(f"<tr><th>{esc(k)}</th><td>{esc(f'{v:,}' if not isinstance(v, str) else v)}</td></tr>" for k, v in rows)


def _entity_sections(report: Report, colors: dict[str, str], type_class: dict[str, str]) -> dict[str, str]:
    """Entities by type, top mentions and the viewer (or why there are none)."""
    if report.entities_by_type is None:
        why = _note("No shard has finished yet (no <code>OUT/_done/&lt;shard&gt;.json</code>).") if not report.markers else \
            _note("This output has no entities table (written by <code>bulkner split</code>): nothing was tagged.")
        return {"types": why, "mentions": why, "concepts": why, "viewer": why}
    by_type = list(report.entities_by_type.items())
    mentions = (
        f'<div class="small"><h3><span class="chip {type_class[t]}"></span>{esc(t)}</h3>'
        f'{bar_chart(report.top_mentions[t], [colors[t]] * len(report.top_mentions[t]), label=f"top mentions {t}", width=520)}</div>'
        for t, _ in by_type
    )
    legend = "".join(f'<span class="legend"><span class="chip {c}"></span>{esc(t)}</span>' for t, c in type_class.items())
    shown = len(report.sentences)
    viewer = (
        f"<p>{shown:,} of {report.candidates:,} sentences with entities, drawn at random. {legend}</p>"
        '<p><input id="search" type="search" placeholder="filter by text or entity type" autocomplete="off"> '
        f'<span id="shown">{shown}</span> shown</p>'
        f'<div id="sentences">{"".join(sentence_html(s, type_class) for s in report.sentences)}</div>'
    )
    types = chart(by_type, [colors[t] for t, _ in by_type], label="entities by type") if by_type else _note("No entities.")
    concepts = "".join(
        f'<div class="small"><h3><span class="chip {type_class[t]}"></span>{esc(t)}</h3>'
        f'{bar_chart(report.top_concepts[t], [colors[t]] * len(report.top_concepts[t]), label=f"top concepts {t}", width=520)}</div>'
        for t, _ in by_type if report.top_concepts.get(t)
    ) or _note("No entity has a concept id (run without <code>--no-link</code> to link them).")
    return {"types": types, "mentions": "".join(mentions), "concepts": concepts, "viewer": viewer}


def _run_sections(report: Report) -> dict[str, str]:
    """Throughput per shard, rejects by reason and the fingerprint."""
    timed = {s: m for s, m in report.markers.items() if isinstance(m.get("seconds"), (int, float))}
    speed = [(s, float(m.get("sentences_per_second") or 0)) for s, m in timed.items()]
    took = [(s, float(m["seconds"])) for s, m in timed.items()]
    throughput = (
        f'<h3>sentences per second</h3>{chart(speed, [PALETTE[0]] * len(speed), " /s", "sentences per second per shard")}'
        f'<h3>seconds</h3>{chart(took, [PALETTE[4]] * len(took), " s", "seconds per shard")}'
    )
    rejects = list(report.rejects_by_reason.items())
    printed = json.dumps(report.fingerprint, indent=2, sort_keys=True, ensure_ascii=False) if report.fingerprint else "(no _fingerprint.json)"
    return {
        "throughput": throughput if timed else _note("The completion markers hold no timings."),
        "rejects": chart(rejects, [PALETTE[1]] * len(rejects), label="rejects by reason") if rejects else _note("No rejects."),
        "fingerprint": f"<pre>{esc(printed)}</pre>",
    }


def render(report: Report) -> str:
    """The report as one HTML page."""
    types = sorted({*(report.entities_by_type or {}), *(t for s in report.sentences for _, _, t, _ in s.spans)})
    colors = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(types)}
    type_class = {t: f"t{i}" for i, t in enumerate(types)}
    style = _asset("report.css") + "".join(f".t{i}{{--c:{colors[t]}}}" for i, t in enumerate(types))
    script = _asset("report.js")
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    page = Template(_asset("page.html"))
    return page.substitute(title=esc(f"bulkner report: {report.out}"), style=style, script=script, script_hash=digest,
                           summary=_summary(report), **_entity_sections(report, colors, type_class), **_run_sections(report))


def write_report(out: str, output: str | Path, sentences: int = 500, seed: int = 0, top: int = 20) -> Report:
    """Build the report of ``out`` and write it to ``output`` (a temporary file renamed into place)."""
    report = build_report(out, sentences, seed, top)
    path = Path(output)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
    try:
        tmp.write_text(render(report), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return report
