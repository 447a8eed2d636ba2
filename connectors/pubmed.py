"""Streaming reader for PubMed/MEDLINE XML (baseline and update files, 2016 MEDLINE format).

Memory stays bounded by one record: each record element is cleared once converted and its
processed siblings are dropped from the tree. The parser never loads DTDs, never touches the
network and never expands entities (an entity reference stays as its literal ``&name;`` text).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import BinaryIO, Optional, Union

from lxml import etree

from bulkner.connectors.fs import open_input
from bulkner.connectors.xmlstream import MALFORMED, normalise_text, release
from bulkner.schema import Document, Passage, Reject, Tombstone, read_reject

logger = logging.getLogger(__name__)

Item = Union[Document, Tombstone, Reject]

ROOTS = frozenset({"PubmedArticleSet", "MedlineCitationSet"})
"""Root elements we read; any other root is an unreadable shard (``ValueError``)."""
RECORDS = frozenset({"PubmedArticle", "PubmedBookArticle", "MedlineCitation"})
DELETIONS = frozenset({"DeleteCitation", "DeleteDocument"})

_PMID = re.compile(r"[0-9]+")


def _abstract_passages(abstract: etree._Element | None, kind: str, lang: str | None) -> list[Passage]:
    """One passage per non-empty ``AbstractText`` of an ``Abstract``/``OtherAbstract``."""
    if abstract is None:
        return []
    passages = []
    for part in abstract.iterfind("AbstractText"):
        text = normalise_text(part)
        if text:
            label, category = part.get("Label"), part.get("NlmCategory")
            passages.append(Passage(kind, text, label or None, category or None, lang))
    return passages


_Parts = tuple[Optional[etree._Element], Optional[etree._Element], Optional[etree._Element], list]


def _parts(record: etree._Element) -> _Parts:
    """The PMID, title, abstract and ``OtherAbstract`` elements of a record, by record type."""
    if record.tag == "PubmedBookArticle":
        doc = record.find("BookDocument")
        if doc is None:
            return None, None, None, []
        title = doc.find("ArticleTitle")
        if not normalise_text(title):
            title = doc.find("Book/BookTitle")
        return doc.find("PMID"), title, doc.find("Abstract"), doc.findall("OtherAbstract")
    citation = record if record.tag == "MedlineCitation" else record.find("MedlineCitation")
    if citation is None:
        return None, None, None, []
    article = citation.find("Article")
    title = article.find("ArticleTitle") if article is not None else None
    if not normalise_text(title) and article is not None:
        title = article.find("VernacularTitle")  # the only title of some non-English records
    abstract = article.find("Abstract") if article is not None else None
    return citation.find("PMID"), title, abstract, citation.findall("OtherAbstract")


def parse_record(record: etree._Element, position: int) -> Document | Reject:
    """Convert one ``PubmedArticle``/``PubmedBookArticle``/``MedlineCitation`` element.

    ``position`` (1-based record number in the file) identifies records that have no usable PMID.
    """
    where = f"{record.tag}#{position}"
    pmid_el, title, abstract, others = _parts(record)
    raw = (pmid_el.text or "").strip() if pmid_el is not None else ""
    if not raw:
        return read_reject("missing_pmid", where, "record has no PMID")
    if not _PMID.fullmatch(raw):
        return read_reject("bad_pmid", raw[:64], f"{where}: PMID is not a number")
    pmid = str(int(raw))
    version_raw = (pmid_el.get("Version") or "1").strip()
    if not _PMID.fullmatch(version_raw):
        return read_reject("bad_version", f"pmid:{pmid}", f"PMID/@Version {version_raw[:32]!r} is not a number")
    passages = []
    title_text = normalise_text(title)
    if title_text:
        passages.append(Passage("title", title_text))
    passages += _abstract_passages(abstract, "abstract", None)
    for other in others:
        passages += _abstract_passages(other, "other_abstract", other.get("Language") or None)
    if not passages:
        return read_reject("no_text", f"pmid:{pmid}", "no title and no abstract text")
    return Document(doc_id=f"pmid:{pmid}", version=int(version_raw), passages=tuple(passages), pmid=pmid, doi=_doi(record))


def _doi(record: etree._Element) -> str | None:
    """The record's own DOI: its ``ArticleIdList``, else the article's ``ELocationID``."""
    paths = ("PubmedData/ArticleIdList/ArticleId[@IdType='doi']", "PubmedBookData/ArticleIdList/ArticleId[@IdType='doi']",
             "MedlineCitation/Article/ELocationID[@EIdType='doi']", "Article/ELocationID[@EIdType='doi']")
    for path in paths:  # not './/': a reference list holds other articles' DOIs
        for el in record.iterfind(path):
            text = (el.text or "").strip()
            if text:
                return text
    return None


def parse_deletion(deletion: etree._Element) -> Iterator[Tombstone | Reject]:
    """One tombstone per PMID of a ``DeleteCitation``/``DeleteDocument`` element."""
    for pmid_el in deletion.iterfind("PMID"):
        raw = (pmid_el.text or "").strip()
        if _PMID.fullmatch(raw):
            yield Tombstone(doc_id=f"pmid:{int(raw)}")
        else:
            yield read_reject("bad_pmid", raw[:64] or deletion.tag, f"{deletion.tag}: PMID is not a number")


def _top_level(stream: BinaryIO, url: str) -> Iterator[etree._Element]:
    """Yield each record and deletion element directly under a known root, then free it."""
    events = etree.iterparse(
        stream,
        events=("start", "end"),
        tag=tuple(ROOTS | RECORDS | DELETIONS),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    root: etree._Element | None = None
    for event, el in events:
        if root is None:
            if event != "start" or el.tag not in ROOTS or el.getparent() is not None:
                top = el
                while top.getparent() is not None:
                    top = top.getparent()
                raise ValueError(f"{url}: unknown root element <{top.tag}>, not PubMed XML")
            root = el
        elif event == "end" and el.getparent() is root:
            yield el
            release(el)
    if root is None and events.root is not None:
        raise ValueError(f"{url}: unknown root element <{events.root.tag}>, not PubMed XML")


def iter_pubmed(stream: BinaryIO, url: str) -> Iterator[Document | Tombstone | Reject]:
    """Records of an open PubMed XML stream; a broken stream ends with a ``malformed_xml`` reject."""
    counts = {"records": 0, "tombstones": 0, "rejects": 0}
    try:
        for el in _top_level(stream, url):
            if el.tag in DELETIONS:
                items: list[Item] = list(parse_deletion(el))
            elif el.tag in RECORDS:
                counts["records"] += 1
                items = [parse_record(el, counts["records"])]
            else:
                continue
            counts["tombstones"] += sum(isinstance(item, Tombstone) for item in items)
            counts["rejects"] += sum(isinstance(item, Reject) for item in items)
            yield from items
    except MALFORMED as exc:
        logger.warning("%s: malformed input after %d records: %s", url, counts["records"], exc)
        counts["rejects"] += 1
        yield read_reject("malformed_xml", url, f"{type(exc).__name__}: {exc}")
    logger.info("%s: %s", url, counts)


def read_pubmed(url: str) -> Iterator[Document | Tombstone | Reject]:
    """Stream the documents, tombstones and rejects of one PubMed XML file (``.gz`` or not).

    Raises ``FileNotFoundError`` for a missing input and ``ValueError`` when the root element is
    not ``PubmedArticleSet`` or ``MedlineCitationSet``; bad records and a truncated or malformed
    file become ``Reject`` items instead.
    """
    with open_input(url) as stream:
        yield from iter_pubmed(stream, url)
