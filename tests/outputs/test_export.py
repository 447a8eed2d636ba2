"""Export round trips on real BC5CDR documents: gold mentions written as the entities table of an
output directory (two finished shards, a replacement, a deletion, a revival, an unfinished shard),
exported and read back with bulkner's PubTator reader, the bioc library and json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bulkner.corpora import GoldDocument
from bulkner.corpora.pubtator import read_pubtator
from bulkner.corpora.registry import read_corpus
from bulkner.outputs.export import LINE_BREAKS, NOT_XML, bare_id, export
from bulkner.pipeline.tagger import segment
from bulkner.schema import Document, Entity, Passage, Span, Tombstone
from bulkner.corpora.gold import sentence_gold
from bulkner.outputs.writer import OutputDir, documents_table, entities_table, tombstones_table
from tests.outputs.shards import write_tables

CDR = Path(__file__).resolve().parents[3] / "shared" / "data" / "ner" / "bc5cdr" / "CDR_DevelopmentSet.PubTator.txt"
NOTE = "Lithium\ttoxicity\r\nwith haloperidol.\nA second line\x0bhere."


def entities(golds: list[GoldDocument]) -> list[Entity]:
    """The gold mentions as entities of the sentences they fall in (scores vary, float32-exact)."""
    sentences, _ = segment([g.document for g in golds], 2000)
    spans = sentence_gold(sentences, golds).spans
    found = [(s, m) for s in sentences for m in spans[s.key]]
    return [Entity(s, m.start + s.start, m.end + s.start, m.type, 0.5 + 0.125 * (k % 4)) for k, (s, m) in enumerate(found)]


def revised(gold: GoldDocument) -> GoldDocument:
    """Version 2 of a document: its title starts with ``Revised: ``."""
    title, *rest = gold.document.passages
    shift = len("Revised: ")
    doc = Document(gold.document.doc_id, 2, (Passage("title", "Revised: " + title.text), *rest))
    return GoldDocument(doc, tuple((i, Span(s.start + shift, s.end + shift, s.type) if i == 0 else s) for i, s in gold.mentions))


def sectioned(gold: GoldDocument) -> GoldDocument:
    """A PMC-like document: the title, then one labelled paragraph per abstract sentence."""
    title, abstract = gold.document.passages
    sentences, _ = segment([Document("x", 1, (abstract,))], 2000)
    passages = [title] + [Passage("paragraph", s.text, label=f"Section {k}", category="RESULTS") for k, s in enumerate(sentences)]
    mentions = [(0, s) for i, s in gold.mentions if i == 0]
    for k, sent in enumerate(sentences):
        inside = [s for i, s in gold.mentions if i == 1 and sent.start <= s.start and s.end <= sent.end]
        mentions += [(k + 1, Span(s.start - sent.start, s.end - sent.start, s.type)) for s in inside]
    pmc = "pmc:PMC" + gold.document.doc_id.split(":")[1]
    return GoldDocument(Document(pmc, 1, tuple(passages)), tuple(mentions))


def plain(doc_id: str, text: str, mentions: list[tuple[int, int, str]]) -> GoldDocument:
    return GoldDocument(Document(doc_id, 1, (Passage("text", text),)), tuple((0, Span(s, e, t)) for s, e, t in mentions))


def write(out: OutputDir, shard: str, golds: list[GoldDocument], deleted: list[str], finished: bool = True) -> None:
    tables = {
        "documents": documents_table([g.document for g in golds], shard),
        "entities": entities_table(entities(golds), shard),
        "tombstones": tombstones_table([Tombstone(d) for d in deleted], shard),
    }
    write_tables(out, shard, tables, {})
    if not finished:
        out.undo(shard)


@pytest.fixture(scope="module")
def cdr() -> list[GoldDocument]:
    if not CDR.exists():
        pytest.skip(f"shared data not found at {CDR}")
    return list(read_corpus("pubtator", CDR, type_map={}).documents[:12])


@pytest.fixture(scope="module")
def run(cdr, tmp_path_factory):
    """An output directory and the documents its export must hold, in order.

    cdr9: documents 0-6, tombstone of 8. cdr10 (after cdr9 in natural order, before it in
    lexical order): documents 7, 8 (revived), a revision of 2, a sectioned copy of 9, a plain-text
    note with line breaks and no title, a document whose id PubTator cannot hold, and a tombstone
    of 4. cdr11 is unfinished: it replaces 5 and deletes 0, and must not count.
    """
    root = tmp_path_factory.mktemp("export") / "out"
    out = OutputDir(str(root))
    ids = [g.document.doc_id for g in cdr]
    note = plain("text:note-1", NOTE, [(0, 16, "Disease"), (0, 7, "Chemical"), (23, 34, "Chemical")])
    odd = plain("text:a|b", "Aspirin helps.", [(0, 7, "Chemical")])
    later = [cdr[7], cdr[8], revised(cdr[2]), sectioned(cdr[9]), note, odd]
    write(out, "cdr9", cdr[:7], [ids[8]])
    write(out, "cdr10", later, [ids[4]])
    write(out, "cdr11", [plain(ids[5], "Replaced.", [])], [ids[0]], finished=False)
    final = [cdr[i] for i in (0, 1, 3, 5, 6)] + later
    return str(root), final


def expected(final: list[GoldDocument], pubtator: bool = False) -> set[tuple]:
    """(id, document-level start, end, text, type) of every entity that the export holds."""
    rows = set()
    for gold in final:
        sentences, _ = segment([gold.document], 2000)
        spans = sentence_gold(sentences, [gold]).spans
        kept = {(s.passage_index, m.start + s.start, m.end + s.start, m.type) for s in sentences for m in spans[s.key]}
        passages = gold.document.passages
        titled = passages[0].kind == "title"
        offsets = [sum(len(p.text) + 1 for p in passages[:i]) + (1 if pubtator and not titled else 0) for i in range(len(passages))]
        for i, start, end, kind in kept:
            text = passages[i].text[start:end]
            rows.add((bare_id(gold.document.doc_id), offsets[i] + start, offsets[i] + end, LINE_BREAKS.sub(" ", text) if pubtator else text, kind))
    return rows


def test_pubtator_round_trip(run, tmp_path):
    out, final = run
    path = tmp_path / "cdr.pubtator"
    stats = export(out, "pubtator", path)
    assert stats["skipped"] == {"pubtator_bad_id": 1} and stats["documents"] == len(final) - 1
    golds = read_pubtator(path)
    assert [g.document.doc_id for g in golds] == ["pmid:" + bare_id(g.document.doc_id) for g in final if g.document.doc_id != "text:a|b"]
    found, texts = set(), {}
    for g in golds:
        title, abstract = (g.document.passages + (Passage("abstract", ""),))[:2]
        texts[bare_id(g.document.doc_id)] = title.text + " " + abstract.text
        found |= {(bare_id(g.document.doc_id), s.start + (len(title.text) + 1) * i, s.end + (len(title.text) + 1) * i, s.type) for i, s in g.mentions}
    want = {r for r in expected(final, pubtator=True) if r[0] != "a|b"}
    assert found == {(pid, s, e, t) for pid, s, e, _, t in want}
    lines = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if "\t" in line]
    assert all(len(f) == 6 and texts[f[0]][int(f[1]) : int(f[2])] == f[3] for f in lines)
    assert {(f[0], int(f[1]), int(f[2]), f[3], f[4]) for f in lines} == want


def test_pubtator_keeps_lines_whole_and_offsets(run, tmp_path):
    out, _ = run
    path = tmp_path / "cdr.pubtator"
    export(out, "pubtator", path)
    block = next(b for b in path.read_text(encoding="utf-8").split("\n\n") if b.startswith("note-1|")).splitlines()
    assert block[:2] == ["note-1|t|", "note-1|a|" + LINE_BREAKS.sub(" ", NOTE)]
    assert block[2:] == ["note-1\t1\t8\tLithium\tChemical\t", "note-1\t1\t17\tLithium toxicity\tDisease\t", "note-1\t24\t35\thaloperidol\tChemical\t"]


def original_blocks() -> dict[str, list[str]]:
    return {b.split("|", 1)[0]: b.splitlines() for b in CDR.read_text(encoding="utf-8").strip().split("\n\n")}


def test_pubtator_reproduces_bc5cdr(run, cdr, tmp_path):
    """Unchanged title + abstract documents come back with BC5CDR's own lines and offsets."""
    out, _ = run
    path = tmp_path / "cdr.pubtator"
    export(out, "pubtator", path)
    exported = {b.split("|", 1)[0]: b.splitlines() for b in path.read_text(encoding="utf-8").strip().split("\n\n")}
    originals = original_blocks()
    unchanged = [bare_id(cdr[i].document.doc_id) for i in (0, 1, 3, 5, 6, 7, 8)]
    cut = 0
    for pmid in unchanged:
        mine, theirs = exported[pmid], originals[pmid]
        assert mine[:2] == theirs[:2]
        mentions = {tuple(line.split("\t")[:5]) for line in theirs[2:] if line.split("\t")[1].isdigit()}
        ours = {tuple(line.split("\t")[:5]) for line in mine[2:]}
        assert ours <= mentions
        cut += len(mentions - ours)
    golds = [cdr[i] for i in (0, 1, 3, 5, 6, 7, 8)]
    sentences, _ = segment([g.document for g in golds], 2000)
    held = sum(len(v) for v in sentence_gold(sentences, golds).spans.values())
    assert cut == len({(g.document.doc_id, i, s) for g in golds for i, s in g.mentions}) - held  # cut by a sentence boundary


@pytest.mark.parametrize("fmt", ["bioc-json", "bioc-xml"])
def test_bioc_round_trip(run, tmp_path, fmt):
    from bioc import biocjson, biocxml, validate

    out, final = run
    path = tmp_path / f"cdr.{fmt}"
    stats = export(out, fmt, path)
    assert stats["skipped"] == {}
    with open(path, "rb" if fmt == "bioc-xml" else "r") as f:
        collection = (biocxml if fmt == "bioc-xml" else biocjson).load(f)
    assert collection.source == "bulkner"
    validate(collection)  # the bioc library's own check: every annotation's text is its location's slice
    assert [d.infons["doc_id"] for d in collection.documents] == [g.document.doc_id for g in final]
    found = set()
    for doc, gold in zip(collection.documents, final):
        assert doc.id == bare_id(gold.document.doc_id)
        originals = gold.document.passages
        assert [p.infons["type"] for p in doc.passages] == [p.kind for p in originals]
        assert [p.infons.get("section_label") for p in doc.passages] == [p.label for p in originals]
        assert [p.offset for p in doc.passages] == [sum(len(q.text) + 1 for q in originals[:i]) for i in range(len(originals))]
        clean = (lambda s: NOT_XML.sub(" ", s)) if fmt == "bioc-xml" else (lambda s: s)
        assert [p.text for p in doc.passages] == [clean(p.text) for p in originals]
        for passage in doc.passages:
            for a in passage.annotations:
                (loc,) = a.locations
                assert a.text == passage.text[loc.offset - passage.offset : loc.end - passage.offset]
                assert float(a.infons["score"]) in (0.5, 0.625, 0.75, 0.875)
                found.add((doc.id, loc.offset, loc.end, a.text, a.infons["type"]))
    assert found == expected(final)
    (note,) = [d for d in collection.documents if d.infons["doc_id"] == "text:note-1"]
    assert "\r\n" in note.passages[0].text  # kept as it is (XML writes it &#13;)


def test_jsonl_round_trip(run, tmp_path):
    out, final = run
    path = tmp_path / "cdr.jsonl"
    export(out, "jsonl", path)
    docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(d["doc_id"], d["doc_version"]) for d in docs] == [(g.document.doc_id, g.document.version) for g in final]
    found = set()
    for doc, gold in zip(docs, final):
        assert [(p["index"], p["kind"], p["label"], p["text"]) for p in doc["passages"]] == [
            (i, p.kind, p.label, p.text) for i, p in enumerate(gold.document.passages)
        ]
        for p in doc["passages"]:
            for e in p["entities"]:
                assert p["text"][e["start"] : e["end"]] == e["text"] and e["score"] in (0.5, 0.625, 0.75, 0.875)
                offset = sum(len(q["text"]) + 1 for q in doc["passages"][: p["index"]])
                found.add((bare_id(doc["doc_id"]), e["start"] + offset, e["end"] + offset, e["text"], e["type"]))
    assert found == expected(final)


def test_versions_deletions_and_counts(run, cdr, tmp_path):
    out, final = run
    stats = export(out, "jsonl", tmp_path / "cdr.jsonl")
    assert stats == {
        "format": "jsonl",
        "output": str(tmp_path / "cdr.jsonl"),
        "shards": 2,
        "documents": len(final),
        "passages": sum(len(g.document.passages) for g in final),
        "entities": len(expected(final)),
        "superseded": 2,  # document 2 (revised in cdr10) and document 4 (deleted in cdr10)
        "deleted": 1,  # document 4; document 8's tombstone in cdr9 is overruled by cdr10
        "skipped": {},
    }
    text = (tmp_path / "cdr.jsonl").read_text(encoding="utf-8")
    assert "Replaced." not in text and text.count(cdr[2].document.doc_id) == 1 and "Revised: " in text


def test_types_filter(run, tmp_path):
    out, final = run
    path = tmp_path / "chemicals.jsonl"
    stats = export(out, "jsonl", path, types=["Chemical"])
    types = [e["type"] for line in path.read_text().splitlines() for p in json.loads(line)["passages"] for e in p["entities"]]
    assert set(types) == {"Chemical"} and stats["entities"] == len([r for r in expected(final) if r[4] == "Chemical"])


def test_errors(run, tmp_path):
    out, _ = run
    with pytest.raises(ValueError, match="unknown export format 'brat'; formats are pubtator, bioc-json"):
        export(out, "brat", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="no output directory"):
        export(str(tmp_path / "nowhere"), "jsonl", tmp_path / "x.jsonl")
    empty = OutputDir(str(tmp_path / "empty"))
    write(empty, "a", [plain("text:1", "Aspirin.", [])], [], finished=False)
    with pytest.raises(ValueError, match="has no finished shard"):
        export(str(tmp_path / "empty"), "jsonl", tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="is a directory"):
        export(out, "jsonl", tmp_path)
    with pytest.raises(FileNotFoundError, match="output folder .* does not exist"):
        export(out, "jsonl", tmp_path / "missing" / "x.jsonl")
    assert not [n for n in os.listdir(tmp_path) if n.startswith((".", "x"))]


def test_object_store_output_directory(tmp_path):
    pytest.importorskip("fsspec")
    url = f"memory://{tmp_path.name}/out"
    write(OutputDir(url), "a", [plain("text:1", "Aspirin helps.", [(0, 7, "Chemical")])], [])
    export(url, "jsonl", tmp_path / "x.jsonl")
    (doc,) = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert doc["passages"][0]["entities"] == [{"start": 0, "end": 7, "text": "Aspirin", "type": "Chemical", "score": 0.5, "origin": "generator", "concept_id": None, "link_score": None}]


def test_export_command_line(tmp_path):
    """`bulkner export` over a `bulkner split` of the embedded sample: one clear line for bad options."""
    from typer.testing import CliRunner

    from bulkner.cli import app, sample_input

    runner = CliRunner()
    assert runner.invoke(app, ["split", sample_input(), "--out", str(tmp_path / "o")]).exit_code == 0
    done = runner.invoke(app, ["export", str(tmp_path / "o"), "--format", "jsonl", "--output", str(tmp_path / "x.jsonl"), "--no-progress"])
    assert done.exit_code == 0 and "exported 4 documents" in done.output, done.output
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 4
    bad = runner.invoke(app, ["export", str(tmp_path / "o"), "--format", "csv", "--output", str(tmp_path / "x.csv")])
    assert bad.exit_code == 2 and "unknown --format 'csv'" in bad.output
    empty = runner.invoke(app, ["export", str(tmp_path / "nothing"), "--format", "jsonl", "--output", str(tmp_path / "y.jsonl")])
    assert empty.exit_code == 2 and "Traceback" not in empty.output


def test_bioc_xml_export_goes_on_past_an_id_with_a_control_character(tmp_path):
    """Issue 26, case 6: an id XML cannot hold (tables written before readers refused such ids)
    is written with the character as a space; the other documents are exported too."""
    from bioc import biocxml

    out = OutputDir(str(tmp_path / "out"))
    docs = [plain("text:bad\x07id", "Aspirin helps.", [(0, 7, "Chemical")]), plain("text:good", "Lithium hurts.", [(0, 7, "Chemical")])]
    write(out, "s1", docs, [])
    stats = export(str(tmp_path / "out"), "bioc-xml", tmp_path / "x.xml")
    with open(tmp_path / "x.xml", "rb") as f:
        collection = biocxml.load(f)
    assert [d.id for d in collection.documents] == ["bad id", "good"] and stats["skipped"] == {}
