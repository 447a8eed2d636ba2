"""Streaming reader for PubMed/MEDLINE XML (baseline and update files, 2016 MEDLINE format).

The file is cut into its records at the byte level and each record is parsed on its own
(``xmlstream.RecordSplitter``), so a broken record costs that record only and memory stays bounded
by one record. Every record of the file comes out as a document, tombstones (one per deleted PMID)
or rejects. The parser never loads DTDs, never touches the network and never expands entities (an
entity reference stays as its literal ``&name;`` text).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from typing import BinaryIO

from lxml import etree

from bulkner.connectors.fs import open_input
from bulkner.connectors.xmlstream import (INT32_MAX, INT64_MAX, Chunk, RecordError, RecordSplitter,
                                          bounded_int, normalise_text, read_prolog, read_record, safe_parser)
from bulkner.config import MAX_RECORD_BYTES
from bulkner.schema import Document, Passage, Reject, Tombstone, read_reject

logger = logging.getLogger(__name__)

Item = Document | Tombstone | Reject

ROOTS = frozenset({"PubmedArticleSet", "MedlineCitationSet"})
"""Root elements we read; any other root is an unreadable shard (``ValueError``)."""
RECORDS = {"PubmedArticleSet": frozenset({"PubmedArticle", "PubmedBookArticle"}),
           "MedlineCitationSet": frozenset({"MedlineCitation"})}
"""The record elements directly under each root."""
DELETIONS = frozenset({"DeleteCitation", "DeleteDocument"})

_PMID_BYTES = re.compile(rb"<PMID\b[^>]*>\s*([0-9]{1,32})\s*</PMID>")


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


_Parts = tuple[etree._Element | None, etree._Element | None, etree._Element | None, list]


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
    number = bounded_int(raw, 1, INT64_MAX)
    if number is None:
        return read_reject("bad_pmid", raw[:64], f"{where}: PMID is not a number from 1 to {INT64_MAX}")
    pmid = str(number)
    version_raw = (pmid_el.get("Version") or "1").strip()
    version = bounded_int(version_raw, 1, INT32_MAX)  # doc_version is an int32 column
    if version is None:
        return read_reject("bad_version", f"pmid:{pmid}",
                           f"PMID/@Version {version_raw[:32]!r} is not a number from 1 to {INT32_MAX}")
    passages = []
    title_text = normalise_text(title)
    if title_text:
        passages.append(Passage("title", title_text))
    passages += _abstract_passages(abstract, "abstract", None)
    for other in others:
        passages += _abstract_passages(other, "other_abstract", other.get("Language") or None)
    if not passages:
        return read_reject("no_text", f"pmid:{pmid}", "no title and no abstract text")
    return Document(doc_id=f"pmid:{pmid}", version=version, passages=tuple(passages), pmid=pmid, doi=_doi(record))


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
        number = bounded_int(raw, 1, INT64_MAX)
        if number is not None:
            yield Tombstone(doc_id=f"pmid:{number}")
        else:
            yield read_reject("bad_pmid", raw[:64] or deletion.tag, f"{deletion.tag}: PMID is not a number from 1 to "
                                                                     f"{INT64_MAX}")


def _lost(chunk: Chunk, url: str, error: RecordError) -> list[Reject]:
    """Rejects for a chunk that cannot be read: one per PMID of a deletion list, else one naming
    the record's PMID when its bytes show one, else its byte range."""
    where = f"{url}@{chunk.start}-{chunk.end}"
    detail = f"bytes {chunk.start}-{chunk.end}: {error}"
    numbers = (bounded_int(match.group(1).decode(), 1, INT64_MAX) for match in _PMID_BYTES.finditer(chunk.data))
    pmids = [f"pmid:{number}" for number in numbers if number is not None]
    if chunk.tag in DELETIONS and pmids:
        return [read_reject(error.reason, pmid, f"{chunk.tag} not applied: {detail}") for pmid in pmids]
    return [read_reject(error.reason, pmids[0] if pmids else where, detail)]


def iter_pubmed(stream: BinaryIO, url: str, max_record: int = MAX_RECORD_BYTES) -> Iterator[Document | Tombstone | Reject]:
    """Records of an open PubMed XML stream, each parsed on its own: a broken record (bad markup,
    too many bad bytes, cut by the end of the input, over ``max_record`` bytes) is a reject and the
    next record still reads.

    Raises ``ValueError`` when the root element is not ``PubmedArticleSet`` or
    ``MedlineCitationSet``; input with no readable root at all is one ``malformed_xml`` reject.
    """
    splitter = RecordSplitter(stream, max_record)
    prolog = read_prolog(splitter, url, ROOTS, "PubMed")
    if isinstance(prolog, Reject):
        yield prolog
        return
    parser, counts = safe_parser(), Counter()
    for chunk in splitter.chunks(RECORDS[prolog.root] | DELETIONS):
        counts["records"] += chunk.tag in RECORDS[prolog.root]
        try:
            el, repairs = read_record(prolog, chunk, parser)
        except RecordError as exc:
            items: list[Item] = _lost(chunk, url, exc)
        else:
            items = list(parse_deletion(el)) if el.tag in DELETIONS else [parse_record(el, counts["records"])]
            if repairs:
                counts["repaired"] += 1
                logger.warning("%s: bytes %d-%d kept with %d invalid bytes or characters replaced by U+FFFD",
                               url, chunk.start, chunk.end, repairs)
        for item in items:
            counts[type(item).__name__.lower() + "s"] += 1
            yield item
    logger.info("%s: %s", url, dict(counts))


def read_pubmed(url: str, max_record: int = MAX_RECORD_BYTES) -> Iterator[Document | Tombstone | Reject]:
    """Stream the documents, tombstones and rejects of one PubMed XML file (``.gz`` or not).

    Raises ``FileNotFoundError`` for a missing input and ``ValueError`` when the root element is
    not ``PubmedArticleSet`` or ``MedlineCitationSet``. Each record that cannot be read (bad
    markup, too many bad bytes, an out-of-range number, cut off by a truncated or corrupt file,
    longer than ``max_record`` bytes: ``record_too_large``) is
    one ``Reject`` (one per PMID for a deletion list), named ``pmid:<n>`` when its bytes show a
    PMID, else ``<url>@<start>-<end>`` (byte offsets in the decompressed file); every other record
    still comes out. A record with a few invalid UTF-8 bytes or forbidden control characters is
    kept with each replaced by U+FFFD (logged, and counted as ``repaired``).
    """
    with open_input(url) as stream:
        yield from iter_pubmed(stream, url, max_record)
