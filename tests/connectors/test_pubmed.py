"""Tests of the PubMed XML reader on every real PubMed file in ../shared/data and on edge cases."""

from __future__ import annotations

import gzip
import html
import re
import shutil
import zlib
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree

from bulkner.connectors.pubmed import read_pubmed
from bulkner.schema import Document, Passage, Reject, Tombstone

# SOURCES.md section A: art, del, struct, AT, lab per file (measured there with lxml).
PUBMED_TABLE = {
    "pubmed/medline16n0902.xml.gz": (604, 1, 215, 1417, 1085),
    "pubmed/test_current_medline.xml.gz": (4, 0, 1, 6, 4),
    "pubmed/pubmed-29768149.xml": (1, 0, 1, 4, 4),
    "pubmed/pubmedsample18n0001.xml.gz": (177, 0, 18, 184, 88),
    "pubmed/pubmedsample_2019.xml.gz": (176, 7, 18, 193, 91),
    "pubmed/pmparser/baseline/pubmed20n1015.xml.gz": (29, 0, 7, 56, 32),
    "pubmed/pmparser/baseline/pubmed21n1062.xml.gz": (29, 0, 10, 59, 43),
    "pubmed/pmparser/baseline/pubmed22n1114.xml.gz": (33, 0, 8, 64, 39),
    "pubmed/pmparser/baseline/pubmed23n1166.xml.gz": (34, 0, 14, 86, 69),
    "pubmed/pmparser/baseline/pubmed24n1219.xml.gz": (30, 0, 12, 69, 51),
    "pubmed/pmparser/baseline/pubmed26n1334.xml.gz": (30, 0, 9, 56, 37),
    "pubmed/pmparser/updatefiles/pubmed20n1016.xml.gz": (28, 262, 11, 59, 42),
    "pubmed/pmparser/updatefiles/pubmed21n1063.xml.gz": (33, 0, 7, 62, 39),
    "pubmed/pmparser/updatefiles/pubmed22n1115.xml.gz": (30, 48, 14, 62, 49),
    "pubmed/pmparser/updatefiles/pubmed23n1167.xml.gz": (23, 0, 4, 24, 16),
    "pubmed/pmparser/updatefiles/pubmed24n1220.xml.gz": (30, 0, 0, 24, 0),
    "pubmed/pmparser/updatefiles/pubmed26n1335.xml.gz": (30, 6, 11, 69, 48),
}
SAFE = etree.XMLParser(load_dtd=False, no_network=True, resolve_entities=False)


def _norm(text: str) -> str:
    return " ".join(text.split())


def _split(items: list) -> tuple[list[Document], list[Tombstone], list[Reject]]:
    docs = [i for i in items if isinstance(i, Document)]
    tombs = [i for i in items if isinstance(i, Tombstone)]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert len(docs) + len(tombs) + len(rejects) == len(items)
    return docs, tombs, rejects


def _independent(path: Path) -> dict[str, tuple[str, list[str]]]:
    """PMID -> (title, abstract texts in order) read with a plain whole-file lxml parse."""
    root = etree.parse(str(path), SAFE).getroot()
    out = {}
    for cit in root.iter("MedlineCitation"):
        parts = cit.findall("Article/Abstract/AbstractText") + cit.findall("OtherAbstract/AbstractText")
        texts = [_norm("".join(p.itertext())) for p in parts]
        title = _norm("".join(cit.find("Article/ArticleTitle").itertext()))
        if not title and cit.find("Article/VernacularTitle") is not None:
            title = _norm("".join(cit.find("Article/VernacularTitle").itertext()))
        out[cit.findtext("PMID").strip()] = (title, [t for t in texts if t])
    return out


def test_table_lists_every_shared_pubmed_file(shared_data: Path) -> None:
    found = {p.relative_to(shared_data).as_posix() for p in (shared_data / "pubmed").rglob("*.xml*")}
    assert found == set(PUBMED_TABLE)


@pytest.mark.parametrize("rel", sorted(PUBMED_TABLE))
def test_counts_match_sources_table(shared_data: Path, rel: str) -> None:
    art, dele, struct, n_at, n_lab = PUBMED_TABLE[rel]
    docs, tombs, rejects = _split(list(read_pubmed(str(shared_data / rel))))
    assert {r.reason for r in rejects} <= {"no_text"}  # empty title and no abstract
    assert len(docs) + len(rejects) == art
    assert len(tombs) == dele == len(set(tombs))
    kinds = Counter(p.kind for d in docs for p in d.passages)
    assert kinds["title"] == len(docs)
    assert kinds["abstract"] + kinds["other_abstract"] == n_at
    assert sum(1 for d in docs if any(p.label for p in d.passages if p.kind == "abstract")) == struct
    assert sum(1 for d in docs for p in d.passages if p.label) == n_lab
    assert all(re.fullmatch(r"pmid:[1-9][0-9]*", d.doc_id) and d.version >= 1 for d in docs)


@pytest.mark.parametrize("rel", sorted(PUBMED_TABLE))
def test_no_text_lost_against_plain_parse(shared_data: Path, rel: str) -> None:
    expected = _independent(shared_data / rel)
    docs, _, rejects = _split(list(read_pubmed(str(shared_data / rel))))
    got = {
        d.doc_id.removeprefix("pmid:"): (
            d.passages[0].text,
            [p.text for p in d.passages if p.kind in ("abstract", "other_abstract")],
        )
        for d in docs
    }
    assert set(got) | {r.record.removeprefix("pmid:") for r in rejects} == set(expected)
    for pmid, value in got.items():
        assert value == expected[pmid], pmid


def test_records_over_the_size_limit_are_rejects_named_by_pmid(shared_data: Path) -> None:
    """Issue 26, case 8: with a 3,000-byte limit every longer citation of a real file is one
    ``record_too_large`` reject named by its PMID; the others read as without a limit."""
    path = str(shared_data / "pubmed" / "medline16n0902.xml.gz")
    full = list(read_pubmed(path))
    capped = list(read_pubmed(path, max_record=3000))
    sizes = {m.group(1).decode(): len(m.group(0)) for m in re.finditer(
        rb"<MedlineCitation .*?<PMID[^>]*>([0-9]+)</PMID>.*?</MedlineCitation>", gzip.decompress(Path(path).read_bytes()), re.DOTALL)}
    large = {f"pmid:{pmid}" for pmid, size in sizes.items() if size > 3000}
    assert 0 < len(large) < len(sizes) and len(capped) == len(full)
    assert {r.record for r in capped if isinstance(r, Reject) and r.reason == "record_too_large"} == large
    assert [d for d in capped if isinstance(d, Document)] == [d for d in full if isinstance(d, Document) and d.doc_id not in large]


def test_inline_markup_keeps_every_word(shared_data: Path) -> None:
    path = shared_data / "pubmed" / "pubmedsample_2019.xml.gz"
    root = etree.parse(str(path), SAFE).getroot()
    marked = [a for a in root.iter("AbstractText") if len(a)]
    assert sum(len(list(a.iterdescendants())) for a in marked) == 97
    docs, _, _ = _split(list(read_pubmed(str(path))))
    passages = " ".join(p.text for d in docs for p in d.passages)
    for part in marked:  # words from the serialised XML with tags stripped, an independent view
        raw = etree.tostring(part, encoding="unicode", with_tail=False)
        words = html.unescape(re.sub(r"<[^>]+>", " ", raw)).split()
        assert all(w in passages for w in words)
    assert "2.4×1028 cells-approximately 25%" in passages  # <sup>28</sup> and its tail


def test_edge_cases_fixture(fixtures: Path) -> None:
    items = list(read_pubmed(str(fixtures / "pubmed" / "edge_cases.xml")))
    docs, tombs, rejects = _split(items)
    assert docs[0] == Document(
        "pmid:100",
        2,
        (
            Passage("title", "In vivo study of H2O uptake."),
            Passage(
                "abstract", "Levels of Ca2+ rose sharply after dosing. With x2 growth.", "BACKGROUND", "BACKGROUND"
            ),
            Passage("abstract", "Survival was 90%.", "RESULTS", "RESULTS"),
            Passage("other_abstract", "Étude in vivo.", language="fre"),
        ),
        pmid="100",
    )
    assert docs[1] == Document(
        "pmid:200", 1, (Passage("title", "GeneReviews"), Passage("abstract", "A book chapter abstract.")), pmid="200"
    )
    assert docs[2] == Document("pmid:700", 1, (Passage("title", "No version attribute."),), pmid="700")
    assert [(r.stage, r.reason, r.record) for r in rejects] == [
        ("read", "missing_pmid", "PubmedArticle#3"),
        ("read", "bad_pmid", "12a"),
        ("read", "no_text", "pmid:500"),
        ("read", "bad_version", "pmid:600"),
    ]
    assert tombs == [Tombstone("pmid:300"), Tombstone("pmid:301"), Tombstone("pmid:400")]


def test_missing_pmid_built_in_test(tmp_path: Path) -> None:
    xml = tmp_path / "missing.xml"
    xml.write_text(
        "<MedlineCitationSet><MedlineCitation><Article><ArticleTitle>No id</ArticleTitle></Article>"
        "</MedlineCitation><MedlineCitation><PMID>7</PMID><Article><ArticleTitle>Kept</ArticleTitle>"
        "</Article></MedlineCitation></MedlineCitationSet>"
    )
    items = list(read_pubmed(str(xml)))
    assert items[0] == Reject("read", "missing_pmid", "MedlineCitation#1", "record has no PMID")
    assert items[1] == Document("pmid:7", 1, (Passage("title", "Kept"),), pmid="7")


def test_plain_gzip_and_file_url_read_the_same(fixtures: Path, tmp_path: Path) -> None:
    src = fixtures / "pubmed" / "edge_cases.xml"
    gz = tmp_path / "edge_cases.xml.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    plain = list(read_pubmed(str(src)))
    assert list(read_pubmed(str(gz))) == plain
    assert list(read_pubmed(gz.as_uri())) == plain


def test_shared_gz_and_unzipped_copy_agree(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "pubmed" / "pmparser" / "updatefiles" / "pubmed26n1335.xml.gz"
    xml = tmp_path / "pubmed26n1335.xml"
    with gzip.open(src, "rb") as fin, xml.open("wb") as fout:
        shutil.copyfileobj(fin, fout)
    assert list(read_pubmed(str(xml))) == list(read_pubmed(src.as_uri()))


def _cut_record_id(data: bytes, url: str) -> str:
    """How the reject of the record a cut falls in is named: by the PMID its bytes show, else
    by its byte range (read here with plain regular expressions)."""
    start = data.rindex(b"<PubmedArticle>")
    pmid = re.search(rb"<PMID[^>]*>([0-9]+)</PMID>", data[start:])
    return f"pmid:{int(pmid.group(1))}" if pmid else f"{url}@{start}-{len(data)}"


def test_truncated_xml_keeps_records_before_the_cut(shared_data: Path, tmp_path: Path) -> None:
    full_path = shared_data / "pubmed" / "pubmedsample_2019.xml.gz"
    data = gzip.decompress(full_path.read_bytes())
    cut = data[: len(data) // 2]
    part = tmp_path / "cut.xml"
    part.write_bytes(cut)
    items = list(read_pubmed(str(part)))
    whole = cut.count(b"</PubmedArticle>")
    assert whole > 50
    assert items[:-1] == list(read_pubmed(str(full_path)))[:whole]
    last = items[-1]  # only the record the cut falls in is lost
    assert (last.stage, last.reason, last.record) == ("read", "malformed_xml", _cut_record_id(cut, str(part)))
    assert "end of input" in last.detail


def test_truncated_gzip_keeps_a_prefix(shared_data: Path, tmp_path: Path) -> None:
    full_path = shared_data / "pubmed" / "pubmedsample_2019.xml.gz"
    raw = full_path.read_bytes()
    part = tmp_path / "cut.xml.gz"
    part.write_bytes(raw[: int(len(raw) * 0.6)])
    items = list(read_pubmed(str(part)))
    assert len(items) > 50
    assert items[:-1] == list(read_pubmed(str(full_path)))[: len(items) - 1]
    # every record completed before the cut is delivered, none lost with the last buffer
    decompressed = zlib.decompressobj(wbits=31).decompress(part.read_bytes())
    assert len(items) - 1 == decompressed.count(b"</PubmedArticle>")
    assert (items[-1].reason, items[-1].record) == ("malformed_xml", _cut_record_id(decompressed, str(part)))


def test_external_entities_and_dtd_are_not_loaded(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-MARKER")
    dtd = tmp_path / "evil.dtd"
    dtd.write_text('<!ENTITY t "FROM-DTD">')
    xml = tmp_path / "xxe.xml"
    xml.write_text(
        f'<?xml version="1.0"?>\n<!DOCTYPE PubmedArticleSet SYSTEM "{dtd.as_uri()}" [\n'
        f'<!ENTITY xxe SYSTEM "{secret.as_uri()}">\n<!ENTITY net SYSTEM "http://127.0.0.1:9/x">\n]>\n'
        "<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID>1</PMID><Article>"
        "<ArticleTitle>a &xxe; b &net; c &t; d</ArticleTitle></Article></MedlineCitation>"
        "</PubmedArticle></PubmedArticleSet>"
    )
    items = list(read_pubmed(str(xml)))
    text = repr(items)
    assert "SECRET-MARKER" not in text and "FROM-DTD" not in text
    assert isinstance(items[0], Document) and items[0].passages[0].text.startswith("a ")


def test_billion_laughs_is_not_expanded(tmp_path: Path) -> None:
    names = "abcdefghi"
    decls = ['<!ENTITY a "aaaaaaaaaa">'] + [
        f'<!ENTITY {n} "{("&" + p + ";") * 10}">' for p, n in zip(names, names[1:])
    ]
    xml = tmp_path / "lol.xml"
    xml.write_text(
        "<?xml version='1.0'?>\n<!DOCTYPE PubmedArticleSet [\n" + "\n".join(decls) + "\n]>\n"
        "<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID>1</PMID><Article><ArticleTitle>"
        + "&i;" * 10
        + "</ArticleTitle></Article></MedlineCitation></PubmedArticle></PubmedArticleSet>"
    )
    items = list(read_pubmed(str(xml)))  # must return (libxml2 may refuse it as malformed)
    assert len(repr(items)) < 2000
    assert all(isinstance(i, Document) or (isinstance(i, Reject) and i.reason == "malformed_xml") for i in items)


def test_unknown_root_and_missing_file_raise(tmp_path: Path) -> None:
    other = tmp_path / "other.xml"
    other.write_text("<article><PubmedArticle/></article>")
    with pytest.raises(ValueError, match="unknown root element <article>"):
        list(read_pubmed(str(other)))
    empty_root = tmp_path / "empty_root.xml"
    empty_root.write_text("<foo><bar/></foo>")
    with pytest.raises(ValueError, match="<foo>"):
        list(read_pubmed(str(empty_root)))
    with pytest.raises(FileNotFoundError, match="nope.xml"):
        list(read_pubmed(str(tmp_path / "nope.xml")))


def test_the_record_s_own_doi_not_its_references(shared_data: Path) -> None:
    path = shared_data / "pubmed" / "pubmed-29768149.xml"
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    (doc,) = [d for d in read_pubmed(str(path)) if isinstance(d, Document)]
    assert (doc.doc_id, doc.pmid, doc.doi) == ("pmid:29768149", "29768149", "10.1056/NEJMoa1715274")


# --- one bad record loses one record ------------------------------------------------------------

DEFECT_FILES = ["pubmed/pmparser/baseline/pubmed20n1015.xml.gz", "pubmed/pmparser/updatefiles/pubmed26n1335.xml.gz"]
"""29 articles; 30 articles and a DeleteCitation of 6 PMIDs."""


def _title_prefix(raw: bytes):
    return lambda record: record.replace(b"<ArticleTitle>", b"<ArticleTitle>" + raw, 1)


LOST = [  # (defect, what it does to the third record's bytes, the reject's reason)
    ("broken end tag", lambda r: r.replace(b"</ArticleTitle>", b"</ArticleTitl>", 1), "malformed_xml"),
    ("broken record start tag", lambda r: r.replace(b"<PubmedArticle>", b"<PubmedArticl>", 1), "malformed_xml"),
    ("no record end tag", lambda r: r.replace(b"</PubmedArticle>", b"", 1), "malformed_xml"),
    ("unclosed attribute", lambda r: r.replace(b'Owner="NLM"', b'Owner="NLM', 1), "malformed_xml"),
    ("raw < in text", lambda r: r.replace(b"<ArticleTitle>", b"<ArticleTitle>p < 0.05 ", 1), "malformed_xml"),
    ("many invalid bytes", _title_prefix(b"\xe9t\xe9 " * 12), "bad_encoding"),
    ("huge version", lambda r: re.sub(rb'<PMID Version="[0-9]+">', b'<PMID Version="99999999999">', r, count=1),
     "bad_version"),
    ("version zero", lambda r: re.sub(rb'<PMID Version="[0-9]+">', b'<PMID Version="0">', r, count=1), "bad_version"),
]
KEPT = [  # (defect, bytes put before the third record's title, how the title then starts)
    ("invalid UTF-8 bytes", b"\xff\xfe", "\ufffd\ufffd"),
    ("a cut multi-byte character", b"\xce ", "\ufffd "),
    ("Latin-1 byte", b"\xb5M ", "\ufffdM "),
    ("raw control character", b"\x07", "\ufffd"),
    ("control character reference", b"&#x7;", "\ufffd"),
    ("decimal control character reference", b"&#27;", "\ufffd"),
]


def _clean(shared_data: Path, rel: str) -> tuple[bytes, etree._Element]:
    """The decompressed bytes of a real file and its tree (one plain lxml parse)."""
    data = gzip.decompress((shared_data / rel).read_bytes())
    return data, etree.fromstring(data, SAFE)


def _with_defect(data: bytes, defect, tmp_path: Path, gz: bool, index: int = 2) -> Path:
    """A copy of ``data`` with ``defect`` applied to the bytes of its ``index``-th PubmedArticle."""
    start = [m.start() for m in re.finditer(rb"<PubmedArticle>", data)][index]
    end = data.index(b"</PubmedArticle>", start) + len(b"</PubmedArticle>")
    broken = data[:start] + defect(data[start:end]) + data[end:]
    path = tmp_path / ("broken.xml.gz" if gz else "broken.xml")
    path.write_bytes(gzip.compress(broken) if gz else broken)
    return path


def _check_one_record(items: list, clean: list, root: etree._Element, index: int) -> tuple[list, list]:
    """Everything but the ``index``-th record reads as in the clean file, and the counts add up:
    records in the file = documents + tombstones + rejects. Returns the items that differ."""
    docs, tombs, rejects = _split(items)
    records = len(root.findall("PubmedArticle")) + len(root.findall("DeleteCitation/PMID"))
    assert len(docs) + len(tombs) + len(rejects) == records
    pmid = f"pmid:{int(root[index].findtext('MedlineCitation/PMID'))}"
    assert [i for i in items if getattr(i, "doc_id", None) != pmid and i not in rejects] == [
        i for i in clean if i.doc_id != pmid
    ]
    return [i for i in items if i not in clean], [i for i in clean if i not in items]


@pytest.mark.parametrize("gz", [False, True], ids=["xml", "gz"])
@pytest.mark.parametrize("rel", DEFECT_FILES)
@pytest.mark.parametrize(("defect", "change", "reason"), LOST, ids=[case[0] for case in LOST])
def test_a_broken_record_costs_that_record(shared_data: Path, tmp_path: Path, rel: str, gz: bool, defect: str,
                                           change, reason: str) -> None:
    data, root = _clean(shared_data, rel)
    items = list(read_pubmed(str(_with_defect(data, change, tmp_path, gz))))
    new, lost = _check_one_record(items, list(read_pubmed(str(shared_data / rel))), root, 2)
    pmid = f"pmid:{int(root[2].findtext('MedlineCitation/PMID'))}"
    assert [(i.stage, i.reason, i.record) for i in new] == [("read", reason, pmid)]
    assert [i.doc_id for i in lost] == [pmid]


@pytest.mark.parametrize("gz", [False, True], ids=["xml", "gz"])
@pytest.mark.parametrize(("defect", "raw", "text"), KEPT, ids=[case[0] for case in KEPT])
def test_a_few_bad_bytes_are_replaced_and_the_record_kept(shared_data: Path, tmp_path: Path, gz: bool, defect: str,
                                                          raw: bytes, text: str, caplog) -> None:
    rel = DEFECT_FILES[0]
    data, root = _clean(shared_data, rel)
    path = _with_defect(data, _title_prefix(raw), tmp_path, gz)
    with caplog.at_level("INFO", logger="bulkner.connectors.pubmed"):
        items = list(read_pubmed(str(path)))
    [new], [old] = _check_one_record(items, list(read_pubmed(str(shared_data / rel))), root, 2)
    title, *rest = old.passages
    assert new == replace(old, passages=(replace(title, text=text + title.text), *rest))
    assert "'repaired': 1" in caplog.text and "replaced by U+FFFD" in caplog.text


@pytest.mark.parametrize("gz", [False, True], ids=["xml", "gz"])
@pytest.mark.parametrize("where", ["after its PMID", "before its PMID"])
def test_a_truncated_file_loses_the_cut_record_only(shared_data: Path, tmp_path: Path, gz: bool, where: str) -> None:
    data, root = _clean(shared_data, DEFECT_FILES[0])
    start = [m.start() for m in re.finditer(rb"<PubmedArticle>", data)][2]
    pmid_at = data.index(b"<PMID", start)
    cut = data[: data.index(b"<Abstract>", start) if where == "after its PMID" else pmid_at - 5]
    path = tmp_path / ("cut.xml.gz" if gz else "cut.xml")
    path.write_bytes(gzip.compress(cut) if gz else cut)
    items = list(read_pubmed(str(path)))
    assert items[:-1] == list(read_pubmed(str(shared_data / DEFECT_FILES[0])))[:2]
    pmid = f"pmid:{int(root[2].findtext('MedlineCitation/PMID'))}"
    expected = pmid if where == "after its PMID" else f"{path}@{start}-{len(cut)}"
    assert (items[-1].reason, items[-1].record) == ("malformed_xml", expected)
    assert items[-1].detail.startswith("bytes ") and "end of input" in items[-1].detail


def test_corrupt_gzip_data_loses_the_record_it_falls_in(shared_data: Path, tmp_path: Path) -> None:
    data, root = _clean(shared_data, DEFECT_FILES[0])
    cut = data.index(b"<Abstract>", data.index(b"<PMID", data.index(b"</PubmedArticle>") + 1))  # in record 2
    path = tmp_path / "corrupt.xml.gz"
    path.write_bytes(gzip.compress(data[:cut]) + b"not gzip data" * 10)  # a second gzip member that is broken
    first, lost = read_pubmed(str(path))
    assert first == next(read_pubmed(str(shared_data / DEFECT_FILES[0])))
    assert (lost.reason, lost.record) == ("malformed_xml", f"pmid:{int(root[1].findtext('MedlineCitation/PMID'))}")
    assert "BadGzipFile" in lost.detail


def test_a_broken_deletion_list_rejects_each_of_its_pmids(shared_data: Path, tmp_path: Path) -> None:
    rel = DEFECT_FILES[1]
    data, _ = _clean(shared_data, rel)
    broken = data.replace(b"</DeleteCitation>", b"</DeleteCitatio>")
    (tmp_path / "broken.xml").write_bytes(broken)
    docs, tombs, rejects = _split(list(read_pubmed(str(tmp_path / "broken.xml"))))
    clean_docs, clean_tombs, _ = _split(list(read_pubmed(str(shared_data / rel))))
    assert docs == clean_docs and tombs == []
    assert [(r.reason, r.record) for r in rejects] == [("malformed_xml", t.doc_id) for t in clean_tombs]


@pytest.mark.parametrize(("between", "records"), [
    ("<!-- a comment --> <?pi x?>\n", 0),
    ("stray text", 1),
    ("<Unknown>an element we do not read</Unknown>", 1),
])
def test_what_stands_between_records(tmp_path: Path, between: str, records: int) -> None:
    record = "<PubmedArticle><MedlineCitation><PMID>{0}</PMID><Article><ArticleTitle>T{0}</ArticleTitle>" \
             "</Article></MedlineCitation></PubmedArticle>"
    path = tmp_path / "x.xml"
    path.write_text(f"<PubmedArticleSet>{record.format(1)}{between}{record.format(2)}</PubmedArticleSet>")
    docs, _, rejects = _split(list(read_pubmed(str(path))))
    assert [d.doc_id for d in docs] == ["pmid:1", "pmid:2"]
    at = len(f"<PubmedArticleSet>{record.format(1)}")
    assert [(r.reason, r.record) for r in rejects] == [("malformed_xml", f"{path}@{at}-{at + len(between)}")] * records


@pytest.mark.parametrize(("pmid", "version", "reason"), [
    ("1" * 19, "1", None),
    ("9" * 20, "1", "bad_pmid"),
    ("1" * 5000, "1", "bad_pmid"),  # longer than int() reads by default
    ("0", "1", "bad_pmid"),
    ("7", str(2**31 - 1), None),
    ("7", str(2**31), "bad_version"),
    ("7", "1" * 5000, "bad_version"),
])
def test_numbers_are_checked_before_they_reach_arrow(tmp_path: Path, pmid: str, version: str, reason) -> None:
    path = tmp_path / "n.xml"
    path.write_text(f'<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID Version="{version}">{pmid}</PMID>'
                    "<Article><ArticleTitle>T</ArticleTitle></Article></MedlineCitation></PubmedArticle>"
                    f"<DeleteCitation><PMID>{pmid}</PMID></DeleteCitation></PubmedArticleSet>")
    first, deletion = read_pubmed(str(path))
    if reason is None:
        assert (first.doc_id, first.version) == (f"pmid:{int(pmid)}", int(version))
    else:
        assert (first.stage, first.reason) == ("read", reason)
    assert isinstance(deletion, Reject if len(pmid) > 19 or pmid == "0" else Tombstone)


def test_a_record_tag_inside_cdata_or_a_comment_is_text(shared_data: Path, tmp_path: Path) -> None:
    """Issue 26, case 9: CDATA holding ``</PubmedArticle>`` lost a well-formed record and added
    spurious rejects; a comment holding one between records did too."""
    data = gzip.decompress((shared_data / "pubmed" / "pmparser" / "updatefiles" / "pubmed26n1335.xml.gz").read_bytes())
    at = data.index(b"<AbstractText")
    at = data.index(b">", at) + 1
    cdata = b"<![CDATA[x < y </PubmedArticle> <PubmedArticle> ]]>"
    second = data.index(b"<PubmedArticle>", data.index(b"</PubmedArticle>"))
    edited = data[:at] + cdata + data[at:second] + b"<!-- </PubmedArticleSet> <PubmedArticle> -->" + data[second:]
    path = tmp_path / "cdata.xml"
    path.write_bytes(edited)
    before, after = (_split(list(read_pubmed(str(p)))) for p in (shared_data / "pubmed" / "pmparser" / "updatefiles" / "pubmed26n1335.xml.gz", path))
    assert not after[2] and len(after[0]) == len(before[0]) and len(after[1]) == len(before[1])
    texts = [p.text for d in after[0] for p in d.passages]
    assert any(t.startswith("x < y </PubmedArticle> <PubmedArticle>") for t in texts)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_a_utf16_or_utf32_file_reads_as_its_utf8_original(shared_data: Path, tmp_path: Path, encoding: str) -> None:
    """Issue 26, case 9: a UTF-16 file was one file-level reject for all its records (exit 3)."""
    original = shared_data / "pubmed" / "pubmedsample_2019.xml.gz"
    text = gzip.decompress(original.read_bytes()).decode("utf-8")
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>') or "encoding=" in text[:100]
    text = re.sub(r'encoding="[^"]+"', f'encoding="{encoding.upper()}"', text, count=1)
    wide = tmp_path / f"wide-{encoding}.xml"
    wide.write_bytes(text.encode(encoding))  # utf-16/utf-32 write a byte order mark; utf-16-be none
    assert list(read_pubmed(str(wide))) == list(read_pubmed(str(original)))
