"""Property tests: the tagging parser and the readers never crash, never misplace a span and never
lose a record silently.

* Parser: every span lies inside its sentence and, through the pipeline, its text is the slice of
  its passage; garbage, empty, over-long and rewritten model outputs are counted as rejects with a
  reason (each bracketed mention ends as a span or as a reject).
* Readers: real records (``../shared/data/pubmed``, ``../shared/data/pmc``) with random byte
  flips, deletions, truncations and inserted control bytes never raise (except the documented
  ``ValueError`` for a wrong root element) and records in = documents + tombstones + rejects,
  records counted in the clean file with lxml.

Runtime is kept modest (50-200 examples per property, seconds in all) for CI on 2 cores;
``BULKNER_PROPERTY_SCALE=10`` multiplies the examples for a longer hunt.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import re
import tarfile
import tempfile
import zlib
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from lxml import etree

from bulkner.config import InputConfig
from bulkner.connectors.generic import read_jsonl, read_parquet, read_text
from bulkner.connectors.jats import read_jats, read_jats_package
from bulkner.connectors.pubmed import read_pubmed
from bulkner.engines.base import Generation
from bulkner.engines.oracle import OraclePrompts
from bulkner.pipeline.tagger import Tagger, TagStats, segment
from bulkner.connectors.discover import collect, detect_format, discover
from bulkner.schema import Document, Passage, Reject, Span, Tombstone
from bulkner.pipeline.sentences import split_sentences
from bulkner.tagging import parse, render, resolve_crossing
from bulkner.tagging.format import tag_sentence
from bulkner.types import resolve_types
from bulkner.outputs.writer import documents_table, entities_table

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PUBMED = SHARED / "pubmed"
PMC = SHARED / "pmc"
BC5CDR_TRAIN = SHARED / "ner" / "bc5cdr" / "CDR_TrainingSet.PubTator.txt"

PARSE_REASONS = {"no_blocks", "stray_text", "unknown_type", "unbalanced_brackets", "empty_mention", "unaligned_span"}
READ_REASONS = {"malformed_xml", "bad_encoding", "missing_pmid", "bad_pmid", "bad_version", "no_text", "missing_id",
                "missing_text", "invalid_utf8", "bad_json", "invalid_unicode", "bad_id"}
SAFE = etree.XMLParser(load_dtd=False, no_network=True, resolve_entities=False, huge_tree=True)


def examples(n: int) -> int:
    """``n`` examples, times ``BULKNER_PROPERTY_SCALE`` (default 1; raise it for a longer hunt)."""
    return n * int(os.environ.get("BULKNER_PROPERTY_SCALE", "1"))


FAST = settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])


def needs(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"shared real data not found: {missing} (see ../shared/data/SOURCES.md)")


def ordered(spans) -> list[Span]:
    return sorted(set(spans), key=lambda s: (s.start, -s.end, s.type))


# --- tagging parser ------------------------------------------------------------------------

TYPES = ["Chemical", "Disease"]


@functools.cache
def real_sentences() -> list[tuple[str, list[Span]]]:
    """BC5CDR training titles and abstract sentences with their gold spans (sentence offsets)."""
    needs(BC5CDR_TRAIN)
    out = []
    for doc in BC5CDR_TRAIN.read_text(encoding="utf-8").strip().split("\n\n")[:150]:
        lines = doc.split("\n")
        title, abstract = lines[0].split("|t|", 1)[1], lines[1].split("|a|", 1)[1]
        text = f"{title} {abstract}"
        spans = [Span(int(f[1]), int(f[2]), f[4]) for f in (line.split("\t") for line in lines[2:])
                 if len(f) >= 5 and f[1].isdigit() and f[4] in TYPES]
        for start, end in split_sentences(text):
            inside = [Span(s.start - start, s.end - start, s.type) for s in spans if start <= s.start and s.end <= end]
            out.append((text[start:end], resolve_crossing(inside)))
    return out


def check_spans(spans: list[Span], sentence: str, types=TYPES) -> None:
    """Spans sorted, unique, inside ``sentence``, of a requested type, with non-blank boundaries."""
    assert spans == ordered(spans)
    for start, end, type_ in spans:
        assert 0 <= start < end <= len(sentence) and type_ in types
        assert not sentence[start].isspace() and not sentence[end - 1].isspace()


def check_parse_rejects(rejects: list[Reject]) -> None:
    for r in rejects:
        assert r.stage == "parse" and r.reason in PARSE_REASONS and isinstance(r.record, str) and len(r.record) <= 200


GARBAGE = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(list("[]\\:：\n\r *-#") + ["  \n", "Disease:  ", "Chemical:", "None", "aspirin", "Ca2+"]),
             max_size=80).map("".join),
    st.sampled_from(["", " ", "\n", "None", " None \n", "NONE", "none.", "Chemical:", "Chemical:  ", ":::", "[[[[", "]]]]",
                     "Chemical:  [", "Chemical:  ]", "Chemical:  []", "Chemical:  [ ]", "Disease: None", "\u0000"]),
)


@settings(FAST, max_examples=examples(150))
@given(GARBAGE, st.sampled_from(range(400)))
def test_garbage_output_never_crashes_and_is_rejected_with_reasons(output: str, pick: int) -> None:
    sentences = real_sentences()
    sentence = sentences[pick % len(sentences)][0]
    result = parse(output, sentence, TYPES)
    check_spans(result.spans, sentence)
    check_parse_rejects(result.rejects)
    if ":" not in output and "：" not in output:  # no line can be a block: one no_blocks reject, or none for "no entities"
        expected = [] if output.strip() in ("", "None") else ["no_blocks"]
        assert [r.reason for r in result.rejects] == expected and result.spans == []


@pytest.mark.parametrize("output", [None, b"Chemical:  [x]", 17, ["Chemical:  [x]"]])
def test_output_that_is_not_a_string_is_a_no_blocks_reject(output) -> None:
    result = parse(output, "x", TYPES)
    assert result.spans == [] and [r.reason for r in result.rejects] == ["no_blocks"]


LABEL_VARIANTS = {
    "Chemical": ["Chemical", "chemical", "CHEMICAL", "- Chemical", "* chemical", "**Chemical**", " chemical "],
    "Disease": ["Disease", "disease", "DISEASE", "# Disease", "disease "],
}
UNKNOWN_LABELS = ["Species", "Gene", "Cell line"]
SAFE_INSERTS = list("abcxyz XYZ0123456789-.,;()/+αβ中'\"") + ["  ", "\u00a0", ":"]


@st.composite
def rewritten_output(draw) -> tuple[str, list[Span], list[dict]]:
    """A real sentence, its gold spans and a model answer built from them and then rewritten: labels
    respelled or replaced by a type nobody asked for, words of the sentence changed, at most one
    bracket per block lost. Returns the sentence, the gold spans and one record per block."""
    sentences = real_sentences()
    sentence, gold = sentences[draw(st.integers(0, len(sentences) - 1))]
    extra = draw(st.lists(st.tuples(st.integers(0, len(sentence) - 1), st.integers(1, 40), st.sampled_from(TYPES)),
                          max_size=3))
    extra = [Span(s, min(s + n, len(sentence)), t) for s, n, t in extra]
    extra = [s for s in extra if not sentence[s.start].isspace() and not sentence[s.end - 1].isspace()]
    spans = resolve_crossing(gold + extra)
    blocks = []
    for type_ in TYPES:
        mine = [s for s in spans if s.type == type_]
        if not mine:
            continue
        body = list(tag_sentence(sentence, mine))
        edits = draw(st.integers(0, 4))
        for _ in range(edits):  # positions next to brackets or escapes would change what is a bracket
            pos = draw(st.integers(0, len(body)))
            if "\\" in body[max(pos - 1, 0):pos + 1] or (pos < len(body) and body[pos] in "[]"):
                continue
            kind = draw(st.sampled_from(["insert", "delete", "replace"]))
            if kind == "insert" or pos == len(body):
                body.insert(pos, draw(st.sampled_from(SAFE_INSERTS)))
            elif kind == "delete":
                del body[pos]
            else:
                body[pos] = draw(st.sampled_from(SAFE_INSERTS))
        lost = 0
        if draw(st.booleans()):
            where = [i for i, c in enumerate(body) if c in "[]" and (i == 0 or body[i - 1] != "\\")]
            if where:
                del body[draw(st.sampled_from(where))]
                lost = 1
        unknown = draw(st.integers(0, 9)) == 0
        label = draw(st.sampled_from(UNKNOWN_LABELS if unknown else LABEL_VARIANTS[type_]))
        blocks.append({"type": type_, "label": label, "body": "".join(body), "mentions": len(mine), "lost": lost,
                       "edited": edits > 0 or lost > 0, "unknown": unknown, "gold": mine})
    order = draw(st.permutations(blocks))
    return sentence, spans, order


@settings(FAST, max_examples=examples(150))
@given(rewritten_output())
def test_rewritten_output_every_mention_is_a_span_or_a_reject(case) -> None:
    sentence, _, blocks = case
    output = "  \n".join(f"{b['label']}:  {b['body']}" for b in blocks) or "None"
    result = parse(output, sentence, TYPES)
    check_spans(result.spans, sentence)
    check_parse_rejects(result.rejects)
    reasons = Counter(r.reason for r in result.rejects)
    known = [b for b in blocks if not b["unknown"]]
    assert reasons["unknown_type"] == len(blocks) - len(known)
    assert reasons["stray_text"] == 0 and reasons["no_blocks"] == 0
    # a lost bracket costs one mention and gives one unbalanced_brackets reject: nothing vanishes
    placed = reasons["empty_mention"] + reasons["unaligned_span"] + reasons["unbalanced_brackets"]
    assert len(result.spans) + placed == sum(b["mentions"] for b in known)
    assert {s.type for s in result.spans} <= {b["type"] for b in known}
    for b in known:
        if not b["edited"]:  # an untouched block gives back exactly its gold spans
            assert [s for s in result.spans if s.type == b["type"]] == ordered(b["gold"])


@settings(FAST, max_examples=examples(60))
@given(rewritten_output(), st.integers(2, 30), st.integers(0, 10_000), st.booleans())
def test_over_long_and_cut_output_never_crashes(case, repeats: int, cut: int, newline: bool) -> None:
    """A looping model repeats its answer (on one line or on many) until max_tokens cuts it anywhere."""
    sentence, _, blocks = case
    once = "  \n".join(f"{b['label']}:  {b['body']}" for b in blocks) or "None"
    output = ("  \n" if newline else " ").join([once] * repeats)
    output = output[: cut % (len(output) + 1)]
    result = parse(output, sentence, TYPES)
    check_spans(result.spans, sentence)
    check_parse_rejects(result.rejects)


# --- through the pipeline: entity text is the passage slice, every answer is accounted for ---


@functools.cache
def real_documents() -> list[Document]:
    needs(PUBMED)
    docs = [i for i in read_pubmed(str(PUBMED / "pmparser" / "updatefiles" / "pubmed26n1335.xml.gz"))
            if isinstance(i, Document)]
    return docs[:12]


class ScriptedEngine:
    """Answers each prompt id with a given text, in reverse order (as a batching engine may)."""

    name = "scripted"

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers

    def generate(self, prompts):
        return [Generation(p.id, self.answers[p.id], 7, 11, finished=len(self.answers[p.id]) < 500) for p in prompts][::-1]

    def close(self) -> None:
        pass


@st.composite
def answer_for(draw, sentence: str) -> str:
    kind = draw(st.sampled_from(["spans", "spans", "rewritten", "garbage", "empty", "long"]))
    if kind == "empty":
        return draw(st.sampled_from(["", "None", " None\n"]))
    if kind == "garbage":
        return draw(GARBAGE)
    n = len(sentence)
    raw = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, 30), st.sampled_from(TYPES)), max_size=4))
    spans = [Span(s, min(s + k, n), t) for s, k, t in raw]
    spans = resolve_crossing([s for s in spans if not sentence[s.start].isspace() and not sentence[s.end - 1].isspace()])
    output = render(sentence, spans, TYPES)
    if kind == "rewritten" and len(output) > 1:
        pos = draw(st.integers(0, len(output) - 1))
        output = output[:pos] + draw(st.sampled_from(SAFE_INSERTS + ["[", "]", "\\", "\n"])) + output[pos + 1:]
    if kind == "long":
        output = (output + "  \n") * draw(st.integers(2, 20))
        output = output[: draw(st.integers(0, len(output)))]
    return output


@settings(FAST, max_examples=examples(50))
@given(st.data(), st.integers(1, 4), st.integers(0, 8), st.integers(1, 64))
def test_tagger_entities_are_passage_slices_and_every_sentence_is_counted(data, n_docs: int, first: int, batch: int) -> None:
    docs = real_documents()[first : first + n_docs]
    sentences, _ = segment(docs, max_chars=4000)
    answers = {s.key: data.draw(answer_for(s.text), label=s.key) for s in sentences}
    stats = TagStats()
    tagger = Tagger(ScriptedEngine(answers), OraclePrompts(resolve_types(TYPES)), batch_sentences=batch)
    entities, rejects = tagger.tag(sentences, stats)
    assert stats.prompts == len(sentences) and stats.output_tokens == 11 * len(sentences)
    assert stats.unfinished == sum(len(a) >= 500 for a in answers.values())
    assert sum(stats.entities.values()) == len(entities)
    keys = {s.key for s in sentences}
    for r in rejects:
        assert r.stage == "parse" and r.reason in PARSE_REASONS and r.record.split(": ", 1)[0] in keys
    passages = {(d.doc_id, i): p.text for d in docs for i, p in enumerate(d.passages)}
    rows = entities_table(entities, "s").to_pylist()
    assert len(rows) == len(entities)
    for e, row in zip(entities, rows):
        s = e.sentence
        assert s.start <= e.start < e.end <= s.end
        assert row["text"] == passages[(row["doc_id"], row["passage_index"])][row["start"] : row["end"]]
    found: dict[str, list[Span]] = {s.key: [] for s in sentences}
    for e in entities:
        found[e.sentence.key].append(Span(e.start - e.sentence.start, e.end - e.sentence.start, e.type))
    for s in sentences:  # no answer lost, none used twice, none given to another sentence
        assert found[s.key] == parse(answers[s.key], s.text, TYPES).spans
    # the documents table holds the same passage text the offsets point into
    table = documents_table(docs, "s").to_pylist()
    assert {(r["doc_id"], r["passage_index"]): r["text"] for r in table} == passages


# --- PubMed XML: real records, corrupted ---------------------------------------------------

PUBMED_FILES = [
    "pubmedsample_2019.xml.gz",
    "medline16n0902.xml.gz",
    "test_current_medline.xml.gz",
    "pmparser/baseline/pubmed23n1166.xml.gz",
    "pmparser/updatefiles/pubmed20n1016.xml.gz",
    "pmparser/updatefiles/pubmed22n1115.xml.gz",
    "pmparser/updatefiles/pubmed26n1335.xml.gz",
]
RECORD_TAGS = {b"PubmedArticleSet": b"PubmedArticle|PubmedBookArticle|DeleteCitation|DeleteDocument",
               b"MedlineCitationSet": b"MedlineCitation|DeleteCitation|DeleteDocument"}
DELETIONS = (b"DeleteCitation", b"DeleteDocument")
PMID_IN_BYTES = re.compile(rb"<PMID\b[^>]*>\s*([0-9]{1,32})\s*</PMID>")


def read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


@functools.cache
def pubmed_layout(name: str) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """A real PubMed file cut into prolog (through the root's start tag), root name and records
    ``(tag, bytes)``; the cut is checked against lxml's count of the records."""
    needs(PUBMED / name)
    data = read_bytes(PUBMED / name)
    root = re.search(rb"<(PubmedArticleSet|MedlineCitationSet)[\s>]", data)
    prolog_end = data.index(b">", root.start()) + 1
    name_ = root.group(1)
    records = [(m.group(1), m.group(0)) for m in
               re.finditer(rb"<(" + RECORD_TAGS[name_] + rb")[\s>].*?</\1\s*>", data[prolog_end:], re.DOTALL)]
    tree = etree.fromstring(data, SAFE)
    assert len(records) == len(tree) == sum(isinstance(el.tag, str) for el in tree)
    return data[:prolog_end], name_, records


def root_of(data: bytes) -> bytes:
    return re.search(rb"<(PubmedArticleSet|MedlineCitationSet)[\s>]", data).group(1)


def records_in(records: list[tuple[bytes, bytes]]) -> list[int]:
    """Per record, how many output items it must give: one, or one per PMID of a deletion list
    (counted with lxml)."""
    counts = []
    for tag, raw in records:
        el = etree.fromstring(raw, SAFE)
        counts.append(len(el.findall("PMID")) if tag in DELETIONS else 1)
    return counts


@st.composite
def pubmed_window(draw) -> tuple[bytes, list[tuple[int, int, bytes]], list[int], int]:
    """A file of 1-25 consecutive real records of a real PubMed file, with its prolog. Returns the
    bytes, each record's (start, end, tag), its expected item count and the prolog's end."""
    name = draw(st.sampled_from(PUBMED_FILES))
    prolog, root, records = pubmed_layout(name)
    first = draw(st.integers(0, len(records) - 1))
    chosen = records[first : first + draw(st.integers(1, 25))]
    if draw(st.booleans()):  # deletion lists sit at a file's end; put one among the records
        deletions = [r for r in records if r[0] in DELETIONS]
        if deletions:
            chosen = chosen + [deletions[0]] if draw(st.booleans()) else [deletions[0]] + chosen
    parts, layout, pos = [prolog], [], len(prolog)
    for tag, raw in chosen:
        parts.append(b"\n")
        pos += 1
        layout.append((pos, pos + len(raw), tag))
        parts.append(raw)
        pos += len(raw)
    parts.append(b"\n</" + root + b">\n")
    return b"".join(parts), layout, records_in(chosen), len(prolog)


CONTROL = st.sampled_from([b"\x00", b"\x01", b"\x07", b"\x08", b"\x0b", b"\x0c", b"\x1b", b"\x1f", b"\x7f", b"\xff",
                           b"\xc3", b"\xe2\x80", b"\xed\xa0\x80", b"&#x7;", b"&#0;"])


def op_strategy(low: int, high: int):
    """One corruption at a position in ``[low, high)``: a byte flip, a deletion, inserted control bytes."""
    pos = st.integers(low, max(low, high - 1))
    return st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(1, 255)),
        st.tuples(st.just("delete"), pos, st.integers(1, 64)),
        st.tuples(st.just("insert"), pos, st.lists(CONTROL, min_size=1, max_size=4).map(b"".join)),
    )


def corrupt(data: bytes, ops: list[tuple], limit: dict[int, int] | None = None) -> bytes:
    """``data`` with ``ops`` applied at their positions in the clean bytes; a deletion never reaches
    the next op's position nor ``limit[pos]`` (the end of the region it was drawn in)."""
    ops = sorted(ops, key=lambda op: op[1])
    out = bytearray(data)
    for i in range(len(ops) - 1, -1, -1):
        kind, pos, arg = ops[i]
        if kind == "flip" and pos < len(out):
            out[pos] ^= arg
        elif kind == "delete":
            stop = min(pos + arg, ops[i + 1][1] if i + 1 < len(ops) else len(out), (limit or {}).get(pos, len(out)))
            del out[pos:max(stop, pos)]
        elif kind == "insert":
            out[pos:pos] = arg
    return bytes(out)


def touched(start: int, end: int, ops: list[tuple]) -> bool:
    """Whether an op changed bytes in ``[start, end)`` (an insertion at either edge does not)."""
    for kind, pos, arg in ops:
        if kind == "insert" and start < pos < end:
            return True
        if kind == "flip" and start <= pos < end:
            return True
        if kind == "delete" and pos < end and pos + arg > start:
            return True
    return False


def write(tmp: Path, data: bytes, gz: bool, name: str = "shard.xml") -> Path:
    path = tmp / (name + ".gz" if gz else name)
    path.write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
    return path


def check_items(items: list) -> None:
    """Every item is a valid document, tombstone or read reject."""
    for item in items:
        if isinstance(item, Reject):
            assert item.stage == "read" and item.reason in READ_REASONS and item.record, item
        elif isinstance(item, Tombstone):
            assert re.fullmatch(r"pmid:[1-9][0-9]*", item.doc_id)
        else:
            assert isinstance(item, Document) and item.passages and 1 <= item.version <= 2**31 - 1
            assert all(p.text and p.text == " ".join(p.text.split()) for p in item.passages)


def same_item(a, b) -> bool:
    """Equal documents and tombstones; rejects by reason (their names hold byte offsets)."""
    return (a.reason == b.reason) if isinstance(a, Reject) and isinstance(b, Reject) else a == b


def split_by(items: list, counts: list[int]) -> list[list]:
    out, pos = [], 0
    for n in counts:
        out.append(items[pos : pos + n])
        pos += n
    assert pos == len(items)
    return out


@functools.lru_cache(maxsize=32)
def clean_items(data: bytes) -> list:
    """What ``read_pubmed`` gives for the clean bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        return list(read_pubmed(str(write(Path(tmp), data, False))))


@pytest.mark.parametrize("name", PUBMED_FILES + ["pubmed-29768149.xml", "pubmedsample18n0001.xml.gz"])
def test_clean_pubmed_records_in_equal_documents_tombstones_rejects(name: str) -> None:
    _, _, records = pubmed_layout(name)
    items = list(read_pubmed(str(PUBMED / name)))
    check_items(items)
    assert len(items) == sum(records_in(records))


@settings(FAST, max_examples=examples(200))
@given(st.data(), pubmed_window(), st.booleans())
def test_pubmed_corrupted_inside_records_gives_one_item_per_record(tmp_path_factory, data, window, gz: bool) -> None:
    """Flips, deletions and control bytes inside citations (never their own start or end tag):
    every citation gives exactly one item, every untouched one exactly what it gave clean."""
    raw, layout, counts, _ = window
    targets = [(start, end, tag) for start, end, tag in layout if tag not in DELETIONS]
    assume(targets)
    ops, limit = [], {}
    for _ in range(data.draw(st.integers(1, 4))):
        start, end, tag = data.draw(st.sampled_from(targets))
        inner_start, inner_end = raw.index(b">", start) + 1, end - len(b"</" + tag + b">")
        op = data.draw(op_strategy(inner_start, inner_end))
        ops.append(op)
        limit[op[1]] = inner_end
    bad = corrupt(raw, ops, limit)
    path = write(tmp_path_factory.mktemp("pm"), bad, gz)
    items = list(read_pubmed(str(path)))
    check_items(items)
    assert len(items) == sum(counts)  # records in = documents + tombstones + rejects
    clean = split_by(clean_items(raw), counts)
    for (start, end, _), got, want in zip(layout, split_by(items, counts), clean):
        if not touched(start, end, ops):
            assert len(got) == len(want) and all(map(same_item, got, want))


def expected_after_cut(raw: bytes, layout, counts, prolog_end: int, root: bytes, cut: int) -> int:
    """Items a PubMed file cut after ``cut`` bytes must give: every complete record's, one for the
    record the cut is in (one per complete PMID for a deletion list), one reject when the cut is
    in the prolog. A record cut after its ``<`` alone leaves nothing to tell it from the start of
    the root's end tag, and gives nothing."""
    if cut < prolog_end:
        return 1
    total = 0
    for (start, end, tag), n in zip(layout, counts):
        if end <= cut:
            total += n
        elif start < cut and not (b"</" + root + b">").startswith(raw[start:cut]):
            total += max(1, len(PMID_IN_BYTES.findall(raw[start:cut]))) if tag in DELETIONS else 1
    return total


@settings(FAST, max_examples=examples(150))
@given(pubmed_window(), st.floats(0, 1), st.booleans())
def test_pubmed_truncated_anywhere_loses_only_the_record_cut(tmp_path_factory, window, where: float, gz: bool) -> None:
    raw, layout, counts, prolog_end = window
    cut = int(where * len(raw))
    path = write(tmp_path_factory.mktemp("pm"), raw[:cut], gz)
    items = list(read_pubmed(str(path)))
    check_items(items)
    assert len(items) == expected_after_cut(raw, layout, counts, prolog_end, root_of(raw), cut)
    if cut < prolog_end:
        assert [i.reason for i in items] == ["malformed_xml"]
    complete = [n for (_, end, _), n in zip(layout, counts) if end <= cut]
    assert all(map(same_item, items[: sum(complete)], clean_items(raw)[: sum(complete)]))


@settings(FAST, max_examples=examples(100))
@given(pubmed_window(), st.floats(0, 1))
def test_pubmed_truncated_gzip_loses_only_the_record_cut(tmp_path_factory, window, where: float) -> None:
    """A gzip file cut anywhere reads as its decompressible prefix."""
    raw, layout, counts, prolog_end = window
    packed = gzip.compress(raw, compresslevel=6)
    packed = packed[: int(where * len(packed))]
    prefix = zlib.decompressobj(wbits=31).decompress(packed)
    path = write(tmp_path_factory.mktemp("pm"), b"", False, "shard.xml.gz")
    path.write_bytes(packed)
    items = list(read_pubmed(str(path)))
    check_items(items)
    assert len(items) == expected_after_cut(raw, layout, counts, prolog_end, root_of(raw), len(prefix))


@settings(FAST, max_examples=examples(200))
@given(st.data(), pubmed_window(), st.booleans(), st.booleans())
def test_pubmed_corrupted_anywhere_never_raises(tmp_path_factory, data, window, gz: bool, truncate: bool) -> None:
    """Corruption anywhere (prolog, tags, deletion lists, between records) never raises but the
    documented ValueError for a root that is not PubMed's; with the prolog intact every record no
    corruption touched still gives exactly the documents and tombstones it gave clean."""
    raw, layout, counts, prolog_end = window
    ops = data.draw(st.lists(op_strategy(0, len(raw)), min_size=1, max_size=6))
    bad = corrupt(raw, ops)
    cut = data.draw(st.integers(0, len(bad))) if truncate else len(bad)
    path = write(tmp_path_factory.mktemp("pm"), bad[:cut], gz)
    items = read_or_wrong_root(path)
    if items is None:  # only a corrupted prolog can make the root another one
        assert min(op[1] for op in ops) < prolog_end
        return
    if min(op[1] for op in ops) < prolog_end or cut < prolog_end:
        return
    grown = sum(len(arg) for kind, _, arg in ops if kind == "insert")
    found = Counter(i for i in items if not isinstance(i, Reject))
    for (start, end, _), want in zip(layout, split_by(clean_items(raw), counts)):
        if not touched(start, end, ops) and end + grown <= cut:
            for item in want:
                if not isinstance(item, Reject):
                    assert found[item] > 0, item
                    found[item] -= 1


def read_or_wrong_root(path: Path) -> list | None:
    """The checked items of a corrupted PubMed file, or None when reading raised the documented
    ValueError for a root that is not PubMed's (the only exception a reader may raise)."""
    try:
        items = list(read_pubmed(str(path)))
    except ValueError as err:
        assert "unknown root element" in str(err)
        return None
    check_items(items)
    return items


@settings(FAST, max_examples=examples(150))
@given(st.data(), pubmed_window(), st.booleans())
def test_pubmed_corrupted_prolog_never_raises(tmp_path_factory, data, window, gz: bool) -> None:
    """Corruption of the XML declaration, DOCTYPE or root start tag: reading either raises the
    documented ValueError or gives an item for every record, or one malformed_xml reject."""
    raw, _, counts, prolog_end = window
    ops = data.draw(st.lists(op_strategy(0, prolog_end), min_size=1, max_size=3))
    path = write(tmp_path_factory.mktemp("pm"), corrupt(raw, ops, {op[1]: prolog_end for op in ops}), gz)
    items = read_or_wrong_root(path)
    if items is not None:
        assert len(items) == sum(counts) or [i.reason for i in items] == ["malformed_xml"]


@settings(FAST, max_examples=examples(100))
@given(st.sampled_from(PUBMED_FILES), st.lists(op_strategy(-120, 24), min_size=1, max_size=3), st.booleans())
@example("pmparser/baseline/pubmed23n1166.xml.gz", [("flip", 1, ord("P") ^ ord(":"))], False)
def test_detect_format_never_raises_on_a_corrupted_prolog(tmp_path_factory, name: str, ops, gz: bool) -> None:
    """Ops at offsets relative to the root's start tag: format detection says pubmed, pmc or None."""
    data = read_bytes(PUBMED / name)
    root = data.index(b"<" + root_of(data))
    ops = [(kind, max(0, root + pos), arg) for kind, pos, arg in ops]
    path = write(tmp_path_factory.mktemp("pm"), corrupt(data, ops), gz)
    assert detect_format(str(path)) in ("pubmed", "pmc", None)


def test_a_corrupted_root_tag_in_a_folder_does_not_stop_discovery(tmp_path) -> None:
    needs(PUBMED)
    good = PUBMED / "pmparser" / "baseline" / "pubmed23n1166.xml.gz"
    (tmp_path / "a.xml.gz").write_bytes(good.read_bytes())
    (tmp_path / "b.xml").write_bytes(read_bytes(good).replace(b"<PubmedArticleSet>", b"<:ubmedArticleSet>", 1))
    assert discover([str(tmp_path)], InputConfig()) == [str(tmp_path / "a.xml.gz")]


@settings(FAST, max_examples=examples(60))
@given(pubmed_window(), st.data())
def test_pubmed_corrupted_gzip_bytes_never_raise(tmp_path_factory, window, data) -> None:
    raw = window[0]
    packed = bytearray(gzip.compress(raw, compresslevel=6))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(packed) - 1))
        packed[pos] ^= data.draw(st.integers(1, 255))
    path = tmp_path_factory.mktemp("pm") / "shard.xml.gz"
    path.write_bytes(bytes(packed))
    read_or_wrong_root(path)


# --- collect: the last record of a doc_id wins -------------------------------------------


@settings(FAST, max_examples=examples(50))
@given(st.lists(st.tuples(st.sampled_from(["doc", "doc", "delete"]), st.integers(0, 5), st.integers(0, 20)),
                min_size=1, max_size=25))
def test_collect_keeps_the_last_record_of_each_doc_id(tmp_path_factory, events) -> None:
    """A shard of real citations whose PMIDs repeat, with deletions among them: documents and
    tombstones are what the last record of each PMID says, and every replacement is counted."""
    prolog, root, records = pubmed_layout("pmparser/baseline/pubmed23n1166.xml.gz")
    articles = [raw for tag, raw in records if tag == b"PubmedArticle"]
    parts, state, replaced, texts = [prolog], {}, 0, {}
    for kind, pmid, source in events:
        number = 9_000_000 + pmid
        if kind == "delete":
            parts.append(b"<DeleteCitation><PMID Version=\"1\">%d</PMID></DeleteCitation>" % number)
            state[number] = "tombstone"
            continue
        raw = articles[source % len(articles)]
        raw = re.sub(rb"(<MedlineCitation\b[^>]*>\s*<PMID\b[^>]*>)[0-9]+(</PMID>)", rb"\g<1>%d\g<2>" % number, raw, count=1)
        parts.append(raw)
        replaced += state.get(number) == "document"
        state[number] = "document"
        texts[number] = source % len(articles)
    parts.append(b"</" + root + b">")
    path = write(tmp_path_factory.mktemp("pm"), b"\n".join(parts), False)
    documents, tombstones, rejects, got_replaced = collect(str(path))
    assert rejects == [] and got_replaced == replaced
    assert len({d.doc_id for d in documents}) == len(documents)
    assert {d.doc_id for d in documents} == {f"pmid:{n}" for n, s in state.items() if s == "document"}
    assert {t.doc_id for t in tombstones} == {f"pmid:{n}" for n, s in state.items() if s == "tombstone"}
    reference = [i for i in read_pubmed(str(PUBMED / "pmparser/baseline/pubmed23n1166.xml.gz")) if isinstance(i, Document)]
    assert len(reference) == len(articles)
    for d in documents:  # each document is the last citation written under its PMID
        assert d.passages == reference[texts[int(d.pmid)]].passages


# --- JATS: real PMC articles, corrupted ----------------------------------------------------


@functools.cache
def pmc_files() -> list[Path]:
    needs(PMC)
    return sorted(p for p in PMC.rglob("*") if p.name.endswith((".nxml", ".nxml.gz", ".xml.gz")))


@settings(FAST, max_examples=examples(100))
@given(st.data(), st.booleans())
def test_jats_article_corrupted_anywhere_is_one_document_or_one_reject(tmp_path_factory, data, truncate: bool) -> None:
    path = data.draw(st.sampled_from(pmc_files()))
    raw = read_bytes(path)
    ops = data.draw(st.lists(op_strategy(0, len(raw)), min_size=1, max_size=4))
    bad = corrupt(raw, ops)
    if truncate:
        bad = bad[: data.draw(st.integers(0, len(bad)))]
    out = write(tmp_path_factory.mktemp("pmc"), bad, data.draw(st.booleans()), "article.nxml")
    try:
        items = list(read_jats(str(out)))
    except ValueError as err:
        assert "unknown root element" in str(err)
        return
    assert len(items) == 1  # one article in, one record out
    check_items(items)


@functools.cache
def article_set() -> tuple[bytes, list[tuple[int, int]]]:
    """A ``pmc-articleset`` of five real articles (as PMC's OA services return them) and the
    articles' byte ranges."""
    parts, layout = [b'<?xml version="1.0" encoding="UTF-8"?>\n<pmc-articleset>'], []
    pos = len(parts[0])
    for path in pmc_files()[:5]:
        raw = read_bytes(path)
        article = raw[re.search(rb"<article[\s>]", raw).start():raw.rindex(b"</article>") + len(b"</article>")]
        parts.append(b"\n")
        pos += 1
        layout.append((pos, pos + len(article)))
        parts.append(article)
        pos += len(article)
    parts.append(b"\n</pmc-articleset>\n")
    data = b"".join(parts)
    assert len(etree.fromstring(data, SAFE)) == len(layout)
    return data, layout


def test_clean_article_set_gives_one_document_per_article(tmp_path) -> None:
    data, layout = article_set()
    items = list(read_jats(str(write(tmp_path, data, False))))
    assert len(items) == len(layout) and all(isinstance(i, Document) for i in items)


@settings(FAST, max_examples=examples(100))
@given(st.data())
def test_jats_article_set_corrupted_inside_articles_loses_nothing(tmp_path_factory, data) -> None:
    """Corruption inside articles: no article vanishes (one op can at most split one in two, e.g.
    ``<article-title`` flipped to ``<article title``), untouched articles read as they did clean."""
    raw, layout = article_set()
    ops, limit = [], {}
    for _ in range(data.draw(st.integers(1, 3))):
        start, end = data.draw(st.sampled_from(layout))
        inner_start, inner_end = raw.index(b">", start) + 1, end - len(b"</article>")
        op = data.draw(op_strategy(inner_start, inner_end))
        ops.append(op)
        limit[op[1]] = inner_end
    out = write(tmp_path_factory.mktemp("pmc"), corrupt(raw, ops, limit), False)
    items = list(read_jats(str(out)))
    check_items(items)
    assert len(layout) <= len(items) <= len(layout) + len(ops)
    clean = list(read_jats(str(write(tmp_path_factory.mktemp("pmc"), raw, False))))
    for (start, end), want in zip(layout, clean):
        if not touched(start, end, ops):
            assert want in items


@functools.cache
def package() -> tuple[bytes, list[Document]]:
    """A ``.tar.gz`` of four real articles (one of them gzipped inside) and their clean documents."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for i, path in enumerate(pmc_files()[:4]):
            data = read_bytes(path)
            data, name = (gzip.compress(data), f"a{i}.nxml.gz") if i == 2 else (data, f"a{i}.nxml")
            member = tarfile.TarInfo(f"pkg/{name}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    clean = [d for path in pmc_files()[:4] for d in read_jats(str(path))]
    return buffer.getvalue(), clean


@settings(FAST, max_examples=examples(60))
@given(st.data())
def test_jats_package_cut_or_corrupted_gives_a_prefix_of_its_articles(tmp_path_factory, data) -> None:
    """A package cut anywhere, or with flipped bytes, never raises; what it gives is documents of
    its first articles, exactly as read clean, then rejects."""
    raw, clean = package()
    bad = bytearray(raw[: data.draw(st.integers(0, len(raw)))] if data.draw(st.booleans()) else raw)
    for _ in range(data.draw(st.integers(0, 2))) if bad else ():
        bad[data.draw(st.integers(0, len(bad) - 1))] ^= data.draw(st.integers(1, 255))
    path = tmp_path_factory.mktemp("pkg") / "pkg.tar.gz"
    path.write_bytes(bytes(bad))
    items = list(read_jats_package(str(path)))
    for item in items:
        assert isinstance(item, Document) or item.reason in READ_REASONS | {"unknown_root", "malformed_package"}
    documents = [i for i in items if isinstance(i, Document)]
    assert len(documents) <= len(clean)
    if bytes(bad) == raw:
        assert items == clean
    elif bytes(bad) == raw[: len(bad)]:  # cut, no byte changed: the articles before the cut, then rejects
        assert documents == clean[: len(documents)] == items[: len(documents)]


# --- generic readers ------------------------------------------------------------------------


@functools.cache
def jsonl_bytes() -> tuple[bytes, list[Document]]:
    docs = real_documents()
    lines = [json.dumps({"id": d.pmid, "text": " ".join(p.text for p in d.passages)}, ensure_ascii=False) for d in docs]
    return ("\n".join(lines) + "\n").encode(), docs


@settings(FAST, max_examples=examples(80))
@given(st.data())
def test_jsonl_corrupted_records_in_equal_documents_plus_rejects(tmp_path_factory, data) -> None:
    """Real abstracts as JSON Lines, corrupted: one item per non-blank line, and a line that came
    through intact is its document with its text exactly as written."""
    raw, docs = jsonl_bytes()
    ops = data.draw(st.lists(op_strategy(0, len(raw)), min_size=1, max_size=5))
    bad = corrupt(raw, ops)
    if data.draw(st.booleans()):
        bad = bad[: data.draw(st.integers(0, len(bad)))]
    path = tmp_path_factory.mktemp("jl") / "x.jsonl"
    path.write_bytes(bad)
    items = list(read_jsonl(str(path)))
    lines = [line for line in bad.split(b"\n") if line.strip()]
    assert len(items) == len(lines)  # records in = documents + rejects
    clean = {line: d for line, d in zip(raw.split(b"\n"), docs)}
    for line, item in zip(lines, items):
        if isinstance(item, Reject):
            assert item.stage == "read" and item.reason in READ_REASONS
        if line in clean:
            want = clean[line]
            assert item == Document(f"text:{want.pmid}", 1, (Passage("text", " ".join(p.text for p in want.passages)),))


@settings(FAST, max_examples=examples(50))
@given(st.lists(st.tuples(st.one_of(st.none(), st.just(""), st.just("  "), st.integers(0, 99).map(str)),
                          st.one_of(st.none(), st.just(""), st.just(" \n"), st.sampled_from(range(12)))),
                max_size=30))
def test_parquet_rows_in_equal_documents_plus_rejects(tmp_path_factory, rows) -> None:
    docs = real_documents()
    texts = [t if not isinstance(t, int) else docs[t % len(docs)].passages[-1].text for _, t in rows]
    path = tmp_path_factory.mktemp("pq") / "x.parquet"
    pq.write_table(pa.table({"id": pa.array([i for i, _ in rows], pa.string()), "text": pa.array(texts, pa.string())}), path)
    items = list(read_parquet(str(path)))
    assert len(items) == len(rows)
    for (raw_id, _), text, item in zip(rows, texts, items):
        ok = raw_id is not None and raw_id.strip() and text is not None and text.strip()
        assert isinstance(item, Document) == bool(ok)
        if ok:
            assert item.passages[0].text == text and item.doc_id == f"text:{raw_id}"
        else:
            assert item.stage == "read" and item.reason in READ_REASONS


@settings(FAST, max_examples=examples(50))
@given(st.binary(max_size=400), st.booleans())
def test_text_file_is_one_document_or_one_reject(tmp_path_factory, data: bytes, gz: bool) -> None:
    path = write(tmp_path_factory.mktemp("tx"), data, gz, "note.txt")
    items = list(read_text(str(path)))
    assert len(items) == 1
    if isinstance(items[0], Document):
        assert items[0].passages[0].text == data.decode("utf-8-sig")
    else:
        assert items[0].reason in {"invalid_utf8", "no_text"}
