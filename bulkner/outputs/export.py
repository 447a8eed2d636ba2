"""Export the finished shards of an output directory as PubTator, BioC (JSON, XML) or JSONL.

What is exported is the latest state of each document: shards apply in natural order, a later
shard's rows for a ``doc_id`` replace earlier ones and a document whose latest record is a
tombstone is left out (README, Versions and deletions). Shards are read one at a time; across
shards only the ``doc_id`` column is held (an Arrow table), to know which shard has each
document's latest record.

Offsets (Python ``str`` code points):

* **jsonl**: into the passage text, as in the ``entities`` table.
* **bioc-json**, **bioc-xml**: document-level, the passages concatenated with one space between
  them (passage ``i`` starts at ``sum(len(p) + 1 for p before it)``); each passage carries that
  ``offset``. With a title passage first this is the PubTator convention. Ids drop their
  namespace (``pmid:123`` → ``123``; the full ``doc_id`` is the ``doc_id`` infon). In BioC XML,
  characters XML 1.0 cannot hold become spaces (same length).
* **pubtator**: into ``title + " " + abstract``, where the title is passage 0 when its kind is
  ``title`` (else empty, so the ``a`` line starts at offset 1) and the ``a`` line joins every
  other passage with single spaces. Tabs and line breaks (every character ``str.splitlines``
  breaks at) inside a passage become spaces (same length: offsets unchanged). The concept-id
  column is empty.

The file is written under a temporary name beside ``output`` and renamed when complete.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from bulkner.connectors.fs import natural_key
from bulkner.outputs.tables import finished_shards, read_shard
from bulkner.outputs.writer import OutputDir

log = logging.getLogger(__name__)

SOURCE = "bulkner"
"""BioC collection source."""
LINE_BREAKS = re.compile("[\t\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
"""Tabs and every character ``str.splitlines`` breaks at: they would break PubTator's lines."""
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
"""Characters XML 1.0 cannot hold."""


@dataclass(frozen=True)
class Mention:
    """An entity of a passage; ``start``/``end`` are offsets into the passage text."""

    start: int
    end: int
    text: str
    type: str
    score: float
    origin: str | None = None
    """The entities table's ``origin`` (None in tables written before it)."""
    concept_id: str | None = None
    link_score: float | None = None


@dataclass(frozen=True)
class ExportPassage:
    """A passage of the documents table with its entities."""

    index: int
    kind: str
    label: str | None
    category: str | None
    text: str
    offset: int
    """Document-level offset: passages concatenated with one space between them."""
    mentions: tuple[Mention, ...]


@dataclass(frozen=True)
class ExportDocument:
    """The latest version of a document: its passages in order."""

    doc_id: str
    version: int
    passages: tuple[ExportPassage, ...]
    pmid: str | None = None
    doi: str | None = None
    license: str | None = None


def bare_id(doc_id: str) -> str:
    """The identifier without its namespace: ``pmid:123`` → ``123``, ``pmc:PMC1`` → ``PMC1``."""
    return doc_id.split(":", 1)[-1]


def _score(value: float) -> float:
    return float(f"{value:.6g}")  # float32 → the digits it holds


def latest_ids(directory: OutputDir, tables: dict[str, set[str]]) -> tuple[dict[str, pa.Array], int]:
    """Per shard, the doc_ids whose latest record is a document of that shard, and how many doc_ids
    a tombstone deletes last. ``tables``: the finished shards of ``documents`` and ``tombstones``.

    Shards apply in natural order; within a shard a doc_id is a document or a tombstone, never both.
    """
    shards = sorted(tables["documents"] | tables["tombstones"], key=natural_key)
    parts = []
    for i, shard in enumerate(shards):
        for table, rank in (("documents", 2 * i), ("tombstones", 2 * i + 1)):
            if shard in tables[table]:
                ids = read_shard(directory, table, shard, ["doc_id"]).column("doc_id")
                parts.append(pa.table({"doc_id": ids, "rank": pa.repeat(pa.scalar(rank, pa.int64()), len(ids))}))
    latest = pa.concat_tables(parts).group_by("doc_id").aggregate([("rank", "max")])
    deleted = pc.equal(pc.bit_wise_and(latest["rank_max"], 1), 1)
    kept = latest.filter(pc.invert(deleted)).group_by("rank_max").aggregate([("doc_id", "list")])
    by_shard = {shards[rank // 2]: ids.values for rank, ids in zip(kept["rank_max"].to_pylist(), kept["doc_id_list"])}
    return by_shard, pc.sum(deleted).as_py() or 0


def shard_documents(
    documents: pa.Table, entities: pa.Table | None, types: Collection[str] | None
) -> tuple[list[ExportDocument], Counter]:
    """The documents of one shard's rows (already the latest ones) with their entities, and the
    entities left out by reason (their passage is missing, their text is not the passage's slice)."""
    passages: dict[str, list[dict]] = {}
    for row in documents.to_pylist():
        passages.setdefault(row["doc_id"], []).append(row)
    mentions: dict[tuple[str, int], list[Mention]] = {}
    problems: Counter = Counter()
    for e in entities.to_pylist() if entities is not None else ():
        if e["doc_id"] not in passages or (types is not None and e["type"] not in types):
            continue  # an older version of a document replaced later, or a type not asked for
        link_score = e.get("link_score")
        mention = Mention(e["start"], e["end"], e["text"], e["type"], _score(e["score"]), e.get("origin"), e.get("concept_id"),
                          None if link_score is None else _score(link_score))
        mentions.setdefault((e["doc_id"], e["passage_index"]), []).append(mention)
    exported = []
    for doc_id, rows in passages.items():
        rows.sort(key=lambda r: r["passage_index"])
        built, offset = [], 0
        for r in rows:
            found = mentions.pop((doc_id, r["passage_index"]), [])
            good = [m for m in found if 0 <= m.start < m.end <= len(r["text"]) and r["text"][m.start : m.end] == m.text]
            problems["entity_text_mismatch"] += len(found) - len(good)
            good.sort(key=lambda m: (m.start, m.end, m.type))
            built.append(ExportPassage(r["passage_index"], r["passage_kind"], r["passage_label"], r["passage_category"], r["text"], offset, tuple(good)))
            offset += len(r["text"]) + 1
        first = rows[0]
        exported.append(ExportDocument(doc_id, first["doc_version"], tuple(built), first["pmid"], first["doi"], first["license"]))
    problems["entity_without_passage"] += sum(len(m) for m in mentions.values())
    return exported, +problems


class LatestDocuments:
    """The latest version of every document of ``out``'s finished shards, read shard by shard."""

    def __init__(self, out: str) -> None:
        self.directory = OutputDir(out)
        self.with_documents = finished_shards(out, "documents")
        if not self.with_documents:
            raise ValueError(f"{out} has no finished shard with documents (no OUT/_done/<shard>.json yet?)")
        self.with_entities = set(finished_shards(out, "entities"))
        tables = {"documents": set(self.with_documents), "tombstones": set(finished_shards(out, "tombstones"))}
        self.latest, self.deleted = latest_ids(self.directory, tables)
        self.shards = len(tables["documents"] | tables["tombstones"])

    def read(self, shard: str, types: Collection[str] | None) -> tuple[list[ExportDocument], int, Counter]:
        """The latest documents of ``shard``, how many of its documents a later record superseded,
        and the entities left out by reason."""
        table = read_shard(self.directory, "documents", shard)
        kept = table.filter(pc.is_in(table["doc_id"], value_set=self.latest.get(shard, pa.array([], pa.string()))))
        entities = read_shard(self.directory, "entities", shard) if shard in self.with_entities else None
        documents, problems = shard_documents(kept, entities, types)
        if problems:
            log.warning("shard %s: entities left out: %s", shard, dict(problems))
        return documents, len(pc.unique(table["doc_id"])) - len(documents), problems


def pubtator_id(doc_id: str) -> str | None:
    """The PubTator id of ``doc_id`` (``bare_id``), or None when it is empty or holds ``|``, a tab
    or a line break."""
    pid = bare_id(doc_id)
    return None if not pid or "|" in pid or LINE_BREAKS.search(pid) else pid


def pubtator_block(doc: ExportDocument) -> str:
    """A PubTator block: title and abstract lines, then one mention line per entity."""
    pid = pubtator_id(doc.doc_id)
    if pid is None:
        raise ValueError(f"document id {doc.doc_id!r} cannot be a PubTator id")
    passages = list(doc.passages)
    title = passages.pop(0) if passages and passages[0].kind == "title" else None
    lines = [f"{pid}|t|{LINE_BREAKS.sub(' ', title.text) if title else ''}"]
    mentions = [(m.start, m.end, m.type, m.concept_id) for m in title.mentions] if title else []
    offset, rest = (len(title.text) if title else 0) + 1, []
    for p in passages:
        mentions += [(m.start + offset, m.end + offset, m.type, m.concept_id) for m in p.mentions]
        rest.append(LINE_BREAKS.sub(" ", p.text))
        offset += len(p.text) + 1
    lines.append(f"{pid}|a|{' '.join(rest)}")
    text = lines[0].split("|", 2)[2] + " " + lines[1].split("|", 2)[2]
    lines += [f"{pid}\t{s}\t{e}\t{text[s:e]}\t{t}\t{concept or ''}" for s, e, t, concept in mentions]
    return "\n".join(lines) + "\n\n"


def jsonl_line(doc: ExportDocument) -> str:
    passages = [
        {
            "index": p.index,
            "kind": p.kind,
            "label": p.label,
            "text": p.text,
            "entities": [{"start": m.start, "end": m.end, "text": m.text, "type": m.type, "score": m.score, "origin": m.origin,
                          "concept_id": m.concept_id, "link_score": m.link_score} for m in p.mentions],
        }
        for p in doc.passages
    ]
    return json.dumps({"doc_id": doc.doc_id, "doc_version": doc.version, "passages": passages}, ensure_ascii=False) + "\n"


def _bioc():
    try:
        import bioc
        import bioc.biocjson
        import bioc.biocxml
    except ImportError as err:
        raise ImportError("BioC export needs the bioc package: pip install bioc") from err
    return bioc


def bioc_document(doc: ExportDocument, xml: bool = False):
    """A ``bioc.BioCDocument``: document-level offsets; ``xml`` replaces characters XML cannot hold
    by spaces (same length), in ids and types too (tables written before readers refused ids with
    control characters may hold some)."""
    bioc = _bioc()
    clean = (lambda s: NOT_XML.sub(" ", s)) if xml else (lambda s: s)
    document = bioc.BioCDocument()
    document.id = clean(bare_id(doc.doc_id))
    extra = {"pmid": doc.pmid, "doi": doc.doi, "license": doc.license}
    document.infons = {"doc_id": clean(doc.doc_id), "doc_version": str(doc.version)} | {k: clean(v) for k, v in extra.items() if v}
    number = 0
    for p in doc.passages:
        passage = bioc.BioCPassage()
        passage.offset, passage.text = p.offset, clean(p.text)
        named = {"type": p.kind, "section_label": p.label, "section_type": p.category}
        passage.infons = {k: clean(v) for k, v in named.items() if v}
        for m in p.mentions:
            annotation = bioc.BioCAnnotation()
            annotation.id, annotation.text = str(number), clean(m.text)
            annotation.infons = {"type": clean(m.type), "score": f"{m.score:.6g}"} | ({"origin": m.origin} if m.origin else {}) \
                | ({"identifier": m.concept_id} if m.concept_id else {})
            annotation.add_location(bioc.BioCLocation(p.offset + m.start, m.end - m.start))
            passage.add_annotation(annotation)
            number += 1
        document.add_passage(passage)
    return document


def _write_lines(path: str, documents: Iterable[ExportDocument], render: Callable[[ExportDocument], str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(render(doc) for doc in documents)


def _write_bioc_json(path: str, documents: Iterable[ExportDocument]) -> None:
    """A BioC-JSON collection, its documents written one at a time."""
    bioc = _bioc()
    collection = bioc.BioCCollection()
    header = {"source": SOURCE, "date": collection.date, "key": "", "version": collection.version, "infons": {}}
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(header)[:-1] + ', "documents": [\n')  # the header's closing brace comes last
        f.writelines((",\n" if n else "") + json.dumps(bioc.biocjson.toJSON(bioc_document(d)), ensure_ascii=False) for n, d in enumerate(documents))
        f.write("\n]}\n")


def _write_bioc_xml(path: str, documents: Iterable[ExportDocument]) -> None:
    """A BioC XML collection, its documents written one at a time."""
    bioc = _bioc()
    collection = bioc.BioCCollection()
    collection.source = SOURCE
    with open(path, "wb") as f:
        writer = bioc.biocxml.BioCXMLDocumentWriter(f, encoding="utf-8")
        writer.write_collection_info(collection)
        for doc in documents:
            writer.write_document(bioc_document(doc, xml=True))
        writer.close()


WRITERS: dict[str, Callable[[str, Iterable[ExportDocument]], None]] = {
    "pubtator": lambda path, docs: _write_lines(path, docs, pubtator_block),
    "bioc-json": _write_bioc_json,
    "bioc-xml": _write_bioc_xml,
    "jsonl": lambda path, docs: _write_lines(path, docs, jsonl_line),
}
"""Writer of each export format: ``writer(path, documents)``."""


def check_output(output: str | Path) -> Path:
    """``output`` as a file path to write: not a directory, its folder existing."""
    path = Path(output)
    if path.is_dir():
        raise ValueError(f"output {path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist")
    return path


def export(out: str, fmt: str, output: str | Path, types: Collection[str] | None = None, progress: bool = False) -> dict:
    """Write the latest documents of ``out`` with their entities (only ``types`` when given) to the
    local file ``output`` in format ``fmt`` (one of ``WRITERS``); the counts of what was written.

    A document PubTator cannot name (``pubtator_id``) is left out and counted in ``skipped``.
    """
    if fmt not in WRITERS:
        raise ValueError(f"unknown export format {fmt!r}; formats are {', '.join(WRITERS)}")
    path = check_output(output)
    if fmt.startswith("bioc"):
        _bioc()
    source = LatestDocuments(out)
    wanted = set(types) if types is not None else None
    counts: Counter = Counter()
    skipped: Counter = Counter()

    def documents() -> Iterator[ExportDocument]:
        for shard in tqdm(source.with_documents, desc="export", unit="shard", disable=not progress):
            docs, superseded, problems = source.read(shard, wanted)
            counts["superseded"] += superseded
            skipped.update(problems)
            for doc in docs:
                if fmt == "pubtator" and pubtator_id(doc.doc_id) is None:
                    log.warning("document %r left out: it cannot be a PubTator id", doc.doc_id)
                    skipped["pubtator_bad_id"] += 1
                    continue
                counts["documents"] += 1
                counts["passages"] += len(doc.passages)
                counts["entities"] += sum(len(p.mentions) for p in doc.passages)
                yield doc

    tmp = str(path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        WRITERS[fmt](tmp, documents())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    log.info("exported %d documents, %d entities to %s", counts["documents"], counts["entities"], path)
    totals = {k: counts[k] for k in ("documents", "passages", "entities", "superseded")}
    return {"format": fmt, "output": str(path), "shards": source.shards, **totals, "deleted": source.deleted, "skipped": dict(skipped)}
