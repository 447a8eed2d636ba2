"""Gold corpus readers: counts on the real corpora (SOURCES.md section C) and edge cases on fixtures."""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from bulkner.corpora.bc2gm import read_bc2gm
from bulkner.corpora.brat import read_brat
from bulkner.corpora.cmeee import CMEEE_TYPES, read_cmeee
from bulkner.corpora.conll import iob_spans, read_conll
from bulkner.corpora.corpus import Corpus
from bulkner.corpora.genia import genia_class, read_genia_json, read_genia_xml
from bulkner.corpora.registry import FORMATS, read_corpus

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "corpora"
DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ner"
JNLPBA = ("Gene", "DNA", "RNA", "CellType", "CellLine")
real = pytest.mark.skipif(not DATA.is_dir(), reason=f"real corpora not found at {DATA} (../shared/data/ner)")


def mention_texts(corpus: Corpus) -> list[tuple[str, int, int, int, str, str]]:
    """``(doc_id, passage, start, end, type, text)`` of every mention; checks each lies in its passage."""
    out = []
    for gold in corpus.documents:
        for index, span in gold.mentions:
            text = gold.document.passages[index].text
            assert 0 <= span.start < span.end <= len(text), (gold.document.doc_id, span)
            out.append((gold.document.doc_id, index, span.start, span.end, span.type, text[span.start : span.end]))
    return out


def overlap_stats(corpus: Corpus) -> tuple[int, int, int]:
    """Mentions overlapping another in the same passage, passages with nesting, crossing pairs."""
    overlapping, nested_passages, crossing = 0, set(), 0
    for gold in corpus.documents:
        by_passage: dict[int, list] = {}
        for index, span in gold.mentions:
            by_passage.setdefault(index, []).append(span)
        for index, spans in by_passage.items():
            for i, a in enumerate(spans):
                others = [b for j, b in enumerate(spans) if j != i and a.start < b.end and b.start < a.end]
                overlapping += bool(others)
                if any(b.start <= a.start and a.end <= b.end for b in others):
                    nested_passages.add((gold.document.doc_id, index))
                crossing += sum(1 for b in others if a.start < b.start < a.end < b.end)
    return overlapping, len(nested_passages), crossing


# ---------------------------------------------------------------- real corpora


@real
def test_bc2gm_train_maps_non_space_offsets_and_reports_the_one_mismatch():
    corpus = read_bc2gm(DATA / "bc2gm" / "original-data" / "train")
    assert len(corpus.documents) == 15000
    assert corpus.type_counts() == {"GENE": 18265 - 1}
    assert sum(1 for g in corpus.documents if g.mentions) == 7676
    assert [(p.record, p.reason) for p in corpus.problems] == [("bc2gm:P02196565T0000", "text_mismatch")]
    stated = Counter()
    for line in (DATA / "bc2gm" / "original-data" / "train" / "GENE.eval").read_text().splitlines():
        sent_id, _, text = line.split("|", 2)
        stated[(f"bc2gm:{sent_id}", text)] += 1
    found = Counter((doc_id, text) for doc_id, _, _, _, _, text in mention_texts(corpus))
    assert found + Counter({("bc2gm:P02196565T0000", "translation upstream factor"): 1}) == stated


@real
def test_bc2gm_test_split():
    corpus = read_corpus("bc2gm", DATA / "bc2gm" / "original-data" / "test")
    assert len(corpus.documents) == 5000 and not corpus.problems
    assert corpus.type_counts() == {"Gene": 6331}
    assert sum(1 for g in corpus.documents if g.mentions) == 2547


@real
@pytest.mark.parametrize(
    "split, docs, counts",
    [
        ("train", 2000, {"protein": 30269, "DNA": 9533, "cell_type": 6718, "cell_line": 3830, "RNA": 951}),
        ("test", 404, {"protein": 5067, "cell_type": 1921, "DNA": 1056, "cell_line": 500, "RNA": 118}),
    ],
)
def test_jnlpba_standoff_from_tar(split, docs, counts):
    path = DATA / "jnlpba" / f"standoff-{split}.tar.gz"
    corpus = read_brat(path)
    assert len(corpus.documents) == docs and not corpus.problems
    assert corpus.type_counts() == counts
    stated = Counter()
    with tarfile.open(path) as tar:
        for member in tar:
            if member.name.endswith(".ann"):
                stem = Path(member.name).stem
                for line in tar.extractfile(member).read().decode().splitlines():
                    stated[(f"brat:{stem}", line.split("\t")[2])] += 1
    assert Counter((doc_id, text) for doc_id, _, _, _, _, text in mention_texts(corpus)) == stated
    assert all(g.document.passages[0].kind == "title" for g in corpus.documents)


@real
def test_jnlpba_standoff_directory_reads_like_the_tar(tmp_path):
    path = DATA / "jnlpba" / "standoff-test.tar.gz"
    with tarfile.open(path) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp_path, filter="data")
        else:
            tar.extractall(tmp_path)
    from_dir = {g.document.doc_id: g for g in read_brat(tmp_path).documents}
    from_tar = {g.document.doc_id: g for g in read_brat(path).documents}
    assert from_dir == from_tar


@pytest.fixture(scope="module")
def genia_xml() -> Corpus:
    if not DATA.is_dir():
        pytest.skip(f"real corpora not found at {DATA}")
    return read_genia_xml(DATA / "genia" / "GENIAcorpus3.02.tgz")


def test_genia_xml_counts(genia_xml):
    assert len(genia_xml.documents) == 2000 and not genia_xml.problems
    assert genia_xml.type_counts() == {"protein": 34264, "DNA": 10004, "cell_type": 7021, "cell_line": 3846, "RNA": 944}
    assert sum(genia_xml.skipped.values()) + sum(genia_xml.type_counts().values()) == 97876
    assert genia_xml.skipped["no_sem"] == 5154
    assert [p.kind for p in genia_xml.documents[0].document.passages] == ["title", "abstract"]
    first = mention_texts(genia_xml)[:2]
    assert [(m[4], m[5]) for m in first] == [("DNA", "IL-2 gene"), ("protein", "NF-kappa B")]
    overlapping, nested, crossing = overlap_stats(genia_xml)
    assert overlapping > 0 and nested > 0 and crossing == 0  # element extents nest, never cross


@real
def test_genia_json_nested_counts():
    corpus = read_genia_json(DATA / "genia" / "genia_test.json")
    assert len(corpus.documents) == 213 and not corpus.problems
    assert sum(len(g.document.passages) for g in corpus.documents) == 1854
    assert sum(len(p.text.split(" ")) for g in corpus.documents for p in g.document.passages) == 48179
    assert corpus.type_counts() == {"protein": 3084, "DNA": 1262, "cell_type": 606, "cell_line": 445, "RNA": 109}
    assert overlap_stats(corpus) == (1199, 446, 0)
    records = json.loads((DATA / "genia" / "genia_test.json").read_text())
    first = records[0]
    entity = first["entities"][1]
    assert mention_texts(corpus)[1][5] == " ".join(first["tokens"][entity["start"] : entity["end"]])


@real
def test_cmeee_dev():
    path = DATA / "cmeee" / "CMeEE-V2_dev.json"
    corpus = read_corpus("cmeee", path)
    assert len(corpus.documents) == 5000 and not corpus.problems
    assert sum(len(g.document.passages[0].text) for g in corpus.documents) == 270417
    counts = {"bod": 7361, "dis": 6328, "sym": 5297, "pro": 3319, "dru": 1566}
    counts |= {"ite": 1339, "mic": 621, "equ": 164, "dep": 86}
    assert corpus.type_counts() == counts and set(counts) == set(CMEEE_TYPES)
    assert overlap_stats(corpus)[0] == 7987
    stated = Counter(
        (f"cmeee:{i}", e["start_idx"], e["end_idx"] + 1, e["type"], e["entity"])
        for i, r in enumerate(json.loads(path.read_text()))
        for e in r["entities"]
    )
    assert Counter((d, s, e, t, x) for d, _, s, e, t, x in mention_texts(corpus)) == stated


@real
@pytest.mark.parametrize(
    "path, sentences, tokens, counts",
    [
        ("ncbi_disease/conll/devel.tsv", 923, 23969, {"Disease": 787}),
        ("ncbi_disease/conll/train.tsv", 5432, 136086, {"Disease": 5145}),
        ("bc5cdr/conll/devel.tsv", 4581, 117453, {"Chemical": 5347, "Disease": 4246}),
        ("bc5cdr/conll/train.tsv", 4560, 118170, {"Chemical": 5203, "Disease": 4182}),
        ("bc2gm/conll/devel.tsv", 2500, 71042, {"Gene": 3061}),
        ("jnlpba/conll/devel.tsv", 1739, 47461, dict(zip(JNLPBA, (2466, 1052, 107, 526, 400)))),
        ("jnlpba/original-data/test/Genia4EReval2.iob2", 3856, 101039, dict(zip(JNLPBA, (5067, 1056, 118, 1921, 500)))),
    ],
)
def test_conll_counts(path, sentences, tokens, counts):
    corpus = read_corpus("conll", DATA / path)
    assert len(corpus.documents) == sentences and not corpus.problems
    assert sum(len(g.document.passages[0].text.split(" ")) for g in corpus.documents) == tokens
    assert corpus.type_counts() == counts
    assert all(text == text.strip() and text for *_, text in mention_texts(corpus))


@real
def test_pubtator_through_the_registry():
    corpus = read_corpus("pubtator", DATA / "ncbi_disease" / "NCBIdevelopset_corpus.txt")
    assert len(corpus.documents) == 100 and not corpus.problems
    assert corpus.type_counts() == {"Disease": 787}
    raw = read_corpus("pubtator", DATA / "ncbi_disease" / "NCBIdevelopset_corpus.txt", type_map={})
    assert raw.type_counts() == {"SpecificDisease": 412, "Modifier": 214, "DiseaseClass": 126, "CompositeMention": 35}


# ---------------------------------------------------------------- fixtures


def test_brat_fixture_reports_discontinuous_crossing_and_mismatched_spans():
    corpus = read_brat(FIXTURES / "brat", type_map={"protein": "Gene"})
    (gold,) = corpus.documents
    passages = gold.document.passages
    assert [(p.kind, p.label) for p in passages] == [
        ("title", None),
        ("abstract", "BACKGROUND"),
        ("abstract", "RESULTS"),
        ("abstract", None),
    ]
    assert [(i, t, x) for _, i, _, _, t, x in mention_texts(corpus)] == [
        (0, "DNA", "IL-2 gene"),
        (0, "cell_type", "T cells"),
        (1, "DNA", "IL-2 promoter"),
        (2, "cell_line", "Jurkat cells"),
    ]
    assert sorted((p.record, p.reason) for p in corpus.problems) == [
        ("brat:doc1#T3", "discontinuous"),
        ("brat:doc1#T6", "crosses_passages"),
        ("brat:doc1#T7", "text_mismatch"),
        ("brat:orphan", "missing_ann"),
    ]
    assert corpus.skipped == {"ann_R": 1, "ann_#": 1}


def test_bc2gm_fixture_counts_non_space_characters_with_inclusive_end():
    corpus = read_bc2gm(FIXTURES / "bc2gm", type_map={"GENE": "Gene"})
    assert [g.document.passages[0].kind for g in corpus.documents] == ["title", "abstract", "text"]
    assert [(d, t, x) for d, _, _, _, t, x in mention_texts(corpus)] == [
        ("bc2gm:P00000001T0000", "Gene", "IL-2  receptor alpha"),
        ("bc2gm:P00000002A0001", "Gene", "CD28"),
    ]
    assert [p.reason for p in corpus.problems] == ["text_mismatch", "out_of_range", "unknown_sentence"]


def test_iob1_and_iob2_give_the_same_spans():
    iob1, iob2 = (mention_texts(read_conll(FIXTURES / name)) for name in ("iob1.tsv", "iob2.tsv"))
    assert iob1 == iob2
    assert [(d, t, x) for d, _, _, _, t, x in iob2] == [
        ("conll:0", "Chemical", "Selegiline"),
        ("conll:0", "Disease", "postural hypotension"),
        ("conll:1", "protein", "IL-2 receptor"),
        ("conll:1", "protein", "IL-4"),
        ("conll:1", "cell_type", "T cells"),
    ]


@pytest.mark.parametrize(
    "tags, spans",
    [
        (["O", "O"], []),
        (["I-A", "I-A", "I-B"], [(0, 2, "A"), (2, 3, "B")]),
        (["B-A", "B-A", "I-A", "O", "I-A"], [(0, 1, "A"), (1, 3, "A"), (4, 5, "A")]),
        (["S-A", "B-B", "E-B", "O"], [(0, 1, "A"), (1, 3, "B")]),
        (["B-cell-type", "I-cell-type"], [(0, 2, "cell-type")]),
    ],
)
def test_iob_spans(tags, spans):
    assert iob_spans(tags) == spans


@pytest.mark.parametrize("tag", ["X-A", "B-", "B", "o"])
def test_iob_spans_rejects_bad_tags(tag):
    with pytest.raises(ValueError, match="bad IOB tag"):
        iob_spans(["O", tag])


def test_cmeee_fixture_inclusive_end_and_nesting():
    corpus = read_cmeee(FIXTURES / "cmeee.json")
    assert [(d, s, e, t, x) for d, _, s, e, t, x in mention_texts(corpus)] == [
        ("cmeee:0", 0, 6, "dis", "儿童SARS"),
        ("cmeee:0", 2, 6, "dis", "SARS"),
        ("cmeee:0", 6, 10, "sym", "细胞下降"),
        ("cmeee:1", 2, 6, "dru", "阿司匹林"),
    ]
    assert [(p.record, p.reason) for p in corpus.problems] == [("cmeee:1", "text_mismatch")]


def test_genia_xml_fixture_keeps_nesting_and_counts_skips():
    corpus = read_genia_xml(FIXTURES / "genia.xml", type_map={"protein": "Gene"})
    (gold,) = corpus.documents
    assert gold.document.doc_id == "medline:123"
    assert [p.text for p in gold.document.passages] == [
        "IL-2 gene expression in T cells.",
        "c-Rel and p50 bind. The NF-kappa B site in Jurkat cells and mRNA.",
    ]
    assert [(i, t, x) for _, i, _, _, t, x in mention_texts(corpus)] == [
        (0, "DNA", "IL-2 gene"),
        (0, "cell_type", "T cells"),
        (1, "Gene", "c-Rel"),
        (1, "Gene", "p50"),
        (1, "cell_line", "Jurkat cells"),
        (1, "RNA", "mRNA"),
    ]
    assert corpus.skipped == {"other_type": 1, "coordination": 1, "no_sem": 1}


@pytest.mark.parametrize(
    "sem, result",
    [
        ("G#protein_family_or_group", ("protein", "")),
        ("G#DNA_N/A", ("DNA", "")),
        ("G#cell_line", ("cell_line", "")),
        ("G#cell_component", (None, "other_type")),
        ("(OR G#DNA_molecule G#DNA_molecule)", (None, "coordination")),
        (None, (None, "no_sem")),
    ],
)
def test_genia_class(sem, result):
    assert genia_class(sem) == result


def test_registry_rejects_unknown_formats_and_missing_paths(tmp_path):
    with pytest.raises(ValueError, match="formats are pubtator, bc2gm, brat, genia-xml, genia-json, cmeee, conll"):
        read_corpus("bioc", tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        read_corpus("conll", tmp_path / "missing.tsv")
    assert set(FORMATS) == {"pubtator", "bc2gm", "brat", "genia-xml", "genia-json", "cmeee", "conll"}
