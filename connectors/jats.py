"""Streaming reader for JATS full-text articles (PMC Open Access ``.nxml``/``.xml`` and packages).

Reads one article file (root ``<article>``), an article set (root ``<pmc-articleset>``, streamed
article by article, each freed once converted) or a ``.tar.gz``/``.tgz``/``.tar`` package of such
files (members streamed, never extracted). JATS 1.x and the older NLM Archiving DTDs 2.3/3.0 read
the same way. Each article becomes one ``Document`` whose passages are in reading order:

* ``title``: ``article-title`` (``: subtitle`` appended when there is one);
* ``abstract``: one per ``<p>`` of every ``<abstract>``/``<trans-abstract>``, labelled with the
  abstract's type and the section titles around the paragraph (``Background``,
  ``author-summary``); ``language`` is the ``xml:lang`` a translated abstract states;
* ``heading``: each section title of the body and back matter, labelled with the heading path of
  its parent sections;
* ``paragraph``: each ``<p>`` of the body, back sections, appendices, acknowledgements, notes and
  glossary, labelled with its heading path (``Methods/Cell culture``) and categorised by the
  outermost section's ``sec-type``;
* ``caption``: the caption (title and paragraphs) of each figure, table, supplementary material,
  media object and box, labelled with the element's ``<label>``;
* ``footnote``: each table footnote and back-matter footnote, labelled with its ``<label>``;
* sub-articles and responses follow, their title a ``heading`` and their passages labelled
  under it (a poster-abstract supplement holds all its text there).

Not read: reference lists, table cells, front-matter metadata (authors, affiliations, author
notes, keywords), graphics, object ids and display formulas standing between paragraphs. A
formula inside text becomes ``FORMULA`` and an inline graphic ``GRAPHIC``, so the words around
them keep honest offsets; a block nested in a paragraph (list, figure, table, quote, box...) is
cut out of the paragraph's text and read in its own right right after it. The parser never loads
DTDs, never touches the network and never expands entities (``&name;`` stays literal text).
"""

from __future__ import annotations

import gzip
import io
import logging
import re
import tarfile
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

from lxml import etree

from bulkner.config import MAX_RECORD_BYTES
from bulkner.connectors.fs import GunzipStream, open_input
from bulkner.connectors.xmlstream import (INT64_MAX, MALFORMED, Chunk, Prolog, RecordError, RecordSplitter,
                                          bounded_int, normalise_text, parse_document, read_prolog, read_record, safe_parser)
from bulkner.schema import Document, Passage, Reject, read_reject

logger = logging.getLogger(__name__)

JATS_ROOTS = frozenset({"article", "pmc-articleset"})
"""Root elements we read; any other root is an unreadable shard (``ValueError``)."""
FORMULA = "[formula]"
"""Stands in the text for an inline or display formula (MathML, TeX or an image of one)."""
GRAPHIC = "[graphic]"
"""Stands in the text for an ``inline-graphic``."""

_MML = "{http://www.w3.org/1998/Math/MathML}"
_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
_ALI_LICENSE_REF = "{http://www.niso.org/schemas/ali/1.0/}license_ref"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

_FORMULAS = frozenset({"inline-formula", "disp-formula", f"{_MML}math", "tex-math"})
_NESTED = frozenset({
    "p", "list", "def-list", "fig", "fig-group", "table-wrap", "table-wrap-group", "disp-quote",
    "boxed-text", "statement", "supplementary-material", "media", "fn", "speech", "verse-group",
})
"""Blocks that may sit inside a paragraph: cut out of its text and read in their own right."""
_CUT = frozenset({"label", "object-id", "graphic", "table", "ref-list", "alt-text", "long-desc"})
"""Elements whose content is never passage text."""
_SKIPPED = _CUT | _FORMULAS | {"title", "caption", "attrib", "permissions", "sec-meta", "kwd-group", "array"}
"""Children a block walk passes over (titles and captions are read by their parent)."""
_SECTIONS = frozenset({"sec", "ack", "app", "notes", "glossary"})
_CAPTIONED = frozenset({
    "fig", "fig-group", "table-wrap", "table-wrap-group", "supplementary-material", "media", "boxed-text",
})
_ARTICLE_PARTS = frozenset({"body", "back", "floats-group"})
_SUB_ARTICLES = frozenset({"sub-article", "response"})
_MEMBER_SUFFIXES = (".xml", ".nxml", ".xml.gz", ".nxml.gz")
_APART = "\x01"
"""Marks a citation's edges in the text pieces (a character XML 1.0 text cannot hold)."""
_GLUED = re.compile(r"(?<=\w)\x01+(?=\w)")
"""A citation edge between two word characters: ``ibrutinib<sup>30</sup>`` reads ``ibrutinib 30``."""
_PMC = re.compile(r"(?:PMC)?([0-9]+)", re.IGNORECASE)
_ID_BYTES = re.compile(
    rb"""<article-id\b[^>]*\bpub-id-type\s*=\s*["'](pmcid|pmc|pmid)["'][^>]*>\s*(?:PMC)?([0-9]{1,32})\s*<""",
    re.IGNORECASE,
)
"""An article's ids as its bytes show them, to name the reject of an article that does not parse."""
_BROKEN_PACKAGE = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)
"""Errors that mean a package's tar (or its gzip) stream is broken or cut short."""


class _At(NamedTuple):
    """Where a block sits: the kind its paragraphs get, its heading path, category and language."""

    kind: str
    path: tuple[str, ...] = ()
    category: str | None = None
    language: str | None = None

    def passage(self, kind: str, text: str, label: str | None, category: str | None = None) -> Passage:
        """A passage here, in this place's language."""
        return Passage(kind, text, label, category, self.language)

    @property
    def label(self) -> str | None:
        """The heading path as a label: titles joined by ``/``, None at the top level."""
        return "/".join(self.path) or None


def _citation(el: etree._Element) -> bool:
    """A bibliographic cross-reference, or a superscript holding one (``word<sup><xref>30</xref></sup>``)."""
    if el.tag == "xref":
        return el.get("ref-type") == "bibr"
    return el.tag == "sup" and el.find(".//xref[@ref-type='bibr']") is not None


def _pieces(el: etree._Element) -> Iterator[str]:
    """Text pieces of ``el`` in order: formulas and inline graphics as placeholders, nested blocks
    and never-text elements cut out (a line break or cut block separates words), citations set
    apart by ``_APART`` marks (``inline_text`` turns a mark between two word characters into a space)."""
    if el.text:
        yield el.text
    for child in el:
        tag = child.tag
        if isinstance(tag, str) and _citation(child):
            yield _APART
            yield from _pieces(child)
            yield _APART
        elif tag is etree.Entity:
            yield child.text  # an unexpanded entity reference: its literal ``&name;``
        elif tag in _FORMULAS:
            yield FORMULA
        elif tag == "inline-graphic":
            yield GRAPHIC
        elif tag == "break" or tag in _NESTED:
            yield " "
        elif isinstance(tag, str) and tag not in _CUT:
            yield from _pieces(child)
        if child.tail:
            yield child.tail


def inline_text(el: etree._Element | None) -> str:
    """``normalise_text`` of ``el`` without its nested blocks, with formula/graphic placeholders."""
    if el is None:
        return ""
    text = _GLUED.sub(" ", "".join(_pieces(el))).replace(_APART, "")
    return " ".join(text.split())


def _nested_blocks(el: etree._Element) -> Iterator[etree._Element]:
    """The outermost nested blocks inside a paragraph, in document order."""
    for child in el:
        if child.tag in _NESTED:
            yield child
        elif isinstance(child.tag, str) and child.tag not in _CUT and child.tag not in _FORMULAS:
            yield from _nested_blocks(child)


def _parts_text(el: etree._Element) -> str:
    """Text of a caption or footnote: its title and paragraphs joined, else its own text."""
    parts = [inline_text(child) for child in el if child.tag in ("title", "p")]
    return " ".join(part for part in parts if part) if parts else inline_text(el)


def _blocks(el: etree._Element, at: _At) -> Iterator[Passage]:
    """Passages of the blocks under ``el``, in document order."""
    for child in el:
        if isinstance(child.tag, str) and child.tag not in _SKIPPED:
            yield from _block(child, at)


def _block(el: etree._Element, at: _At) -> Iterator[Passage]:
    """Passages of one block element; an element we do not know is walked into."""
    tag = el.tag
    if tag == "p":
        yield from _paragraph(el, at)
    elif tag in _SECTIONS:
        yield from _section(el, at)
    elif tag == "fn":
        text = _parts_text(el)
        if text:
            yield at.passage("footnote", text, inline_text(el.find("label")) or None)
    elif tag == "table-wrap-foot":
        for child in el:  # a table note may be a bare paragraph
            if child.tag == "p" and inline_text(child):
                yield at.passage("footnote", inline_text(child), None)
            elif isinstance(child.tag, str) and child.tag not in _SKIPPED:
                yield from _block(child, at)
    else:
        if tag in _CAPTIONED:
            yield from _caption(el, at)
        yield from _blocks(el, at)


def _paragraph(p: etree._Element, at: _At) -> Iterator[Passage]:
    """A paragraph's own text, then the blocks nested in it."""
    text = inline_text(p)
    if text:
        yield at.passage(at.kind, text, at.label, at.category)
    for nested in _nested_blocks(p):
        yield from _block(nested, at)


def _section(sec: etree._Element, at: _At) -> Iterator[Passage]:
    """A section's heading (not in abstracts), then its content under its title."""
    title = inline_text(sec.find("title"))
    category = at.category or sec.get("sec-type") or None
    if title and at.kind != "abstract":
        yield at.passage("heading", title, at.label, category)
    if not title and sec.tag == "ack":
        title = "Acknowledgements"
    yield from _blocks(sec, at._replace(path=at.path + (title,) if title else at.path, category=category))


def _caption(el: etree._Element, at: _At) -> Iterator[Passage]:
    """The caption of a figure, table, box... as one passage labelled with the element's label."""
    caption = el.find("caption")
    text = _parts_text(caption) if caption is not None else ""
    if text:
        yield at.passage("caption", text, inline_text(el.find("label")) or None)


def _meta(article: etree._Element) -> etree._Element | None:
    """The article's (or sub-article's) own ``article-meta`` or ``front-stub``."""
    meta = article.find("front/article-meta")
    return meta if meta is not None else article.find("front-stub")


def _title(meta: etree._Element | None) -> str:
    """``article-title``, with ``: subtitle`` appended when there is one."""
    if meta is None:
        return ""
    title = inline_text(meta.find("title-group/article-title"))
    subtitle = inline_text(meta.find("title-group/subtitle"))
    return f"{title}: {subtitle}" if title and subtitle else title or subtitle


def _abstract(abstract: etree._Element, at: _At) -> Iterator[Passage]:
    """One passage per paragraph of an abstract, labelled with its type and section titles."""
    kind = abstract.get("abstract-type")
    path = at.path + (kind,) if kind else at.path
    yield from _blocks(abstract, _At("abstract", path, None, abstract.get(_XML_LANG) or at.language))


def _content(article: etree._Element, at: _At) -> Iterator[Passage]:
    """Abstracts, body, back matter, floats and sub-articles of an article, in document order."""
    meta = _meta(article)
    for abstract in meta if meta is not None else ():
        if abstract.tag in ("abstract", "trans-abstract"):
            yield from _abstract(abstract, at)
    for part in article:
        if part.tag in _ARTICLE_PARTS:
            yield from _blocks(part, at)
        elif part.tag in _SUB_ARTICLES:
            yield from _sub_article(part, at)


def _sub_article(sub: etree._Element, at: _At) -> Iterator[Passage]:
    """A sub-article's title as a heading, then its passages under that title."""
    title = _title(_meta(sub))
    inner = _At("paragraph", at.path + (title,) if title else at.path, sub.get("article-type") or None,
                sub.get(_XML_LANG) or at.language)
    if title:
        yield inner.passage("heading", title, at.label, inner.category)
    yield from _content(sub, inner)


def _article_ids(meta: etree._Element | None) -> dict[str, str]:
    """``pub-id-type`` → value of the article's own ``article-id`` elements (first of each type)."""
    ids: dict[str, str] = {}
    for el in meta.iterfind("article-id") if meta is not None else ():
        value = normalise_text(el)
        if value:
            ids.setdefault((el.get("pub-id-type") or "").lower(), value)
    return ids


def _doc_id(ids: dict[str, str]) -> str | None:
    """``pmc:PMC<digits>``, else ``pmid:<digits>``, else ``doi:<doi>``; None without any."""
    for kind in ("pmcid", "pmc"):
        match = _PMC.fullmatch(ids.get(kind, ""))
        number = bounded_int(match.group(1), 1, INT64_MAX) if match else None
        if number is not None:
            return f"pmc:PMC{number}"
    pmid = _pmid(ids)
    if pmid is not None:
        return f"pmid:{pmid}"
    return f"doi:{ids['doi']}" if "doi" in ids else None


def _pmid(ids: dict[str, str]) -> str | None:
    """The article's PMID (digits, no leading zeros), None without one that fits 64 bits."""
    number = bounded_int(ids.get("pmid", ""), 1, INT64_MAX)
    return None if number is None else str(number)


def _license(meta: etree._Element | None) -> str | None:
    """The ``<license>``'s URL (``xlink:href`` or ``ali:license_ref``), else its text, else None."""
    lic = meta.find("permissions/license") if meta is not None else None
    if lic is None:
        return None
    href = (lic.get(_XLINK_HREF) or "").strip()
    return href or normalise_text(lic.find(_ALI_LICENSE_REF)) or normalise_text(lic) or None


def parse_article(article: etree._Element, where: str) -> Document | Reject:
    """Convert one ``<article>`` element; ``where`` names it in rejects (``file#position``)."""
    meta = article.find("front/article-meta")  # the article's own, not a sub-article's
    ids = _article_ids(meta)
    doc_id = _doc_id(ids)
    if doc_id is None:
        return read_reject("missing_id", where, "no PMC id, PMID or DOI in front/article-meta")
    title = _title(meta)
    passages = ([Passage("title", title)] if title else []) + list(_content(article, _At("paragraph")))
    if not passages:
        return read_reject("no_text", doc_id, f"{where}: no title and no text")
    pmid = _pmid(ids)
    return Document(doc_id=doc_id, version=1, passages=tuple(passages), pmid=pmid, doi=ids.get("doi"),
                    license=_license(meta))


def _lost(chunk: Chunk, where: str, error: RecordError) -> Reject:
    """The reject of an article that cannot be read, named by the id its bytes show (``pmc:PMC<n>``,
    else ``pmid:<n>``), else by its byte range."""
    ids: dict[str, int] = {}
    for match in _ID_BYTES.finditer(chunk.data):
        number = bounded_int(match.group(2).decode(), 1, INT64_MAX)
        if number is not None:
            ids.setdefault("pmid" if match.group(1).lower() == b"pmid" else "pmc", number)
    record = f"pmc:PMC{ids['pmc']}" if "pmc" in ids else f"pmid:{ids['pmid']}" if "pmid" in ids else None
    return read_reject(error.reason, record or f"{where}@{chunk.start}-{chunk.end}",
                       f"bytes {chunk.start}-{chunk.end}: {error}")


def _whole_article(splitter: RecordSplitter, prolog: Prolog, where: str) -> tuple[etree._Element, int] | Reject:
    """The article of a file whose root is ``<article>`` (parsed whole), or its reject."""
    try:
        return parse_document([prolog.before, prolog.start_tag, *splitter.rest()], safe_parser(), prolog.utf8)
    except MALFORMED as exc:
        return read_reject("malformed_xml", where, f"{type(exc).__name__}: {exc}")
    except RecordError as exc:
        return read_reject(exc.reason, where, str(exc))


def _articles(splitter: RecordSplitter, prolog: Prolog, where: str) -> Iterator[tuple[etree._Element, int] | Reject]:
    """Each ``<article>`` of an article set parsed on its own (with its repair count), or its reject."""
    parser = safe_parser()
    for chunk in splitter.chunks(frozenset({"article"})):
        try:
            yield read_record(prolog, chunk, parser)
        except RecordError as exc:
            yield _lost(chunk, where, exc)


def iter_jats(stream: BinaryIO, where: str, max_record: int = MAX_RECORD_BYTES) -> Iterator[Document | Reject]:
    """Articles of an open JATS stream. Each article of an article set is parsed on its own: a
    broken one is a reject and the next still reads; a broken single-article file is one
    ``malformed_xml`` reject naming the file. An article over ``max_record`` bytes is a
    ``record_too_large`` reject, read no further than that.

    Raises ``ValueError`` when the root element is not ``article`` or ``pmc-articleset``.
    """
    splitter = RecordSplitter(stream, max_record)
    prolog = read_prolog(splitter, where, JATS_ROOTS, "JATS")
    if isinstance(prolog, Reject):
        yield prolog
        return
    if prolog.root == "article":
        parsed: Iterator[tuple[etree._Element, int] | Reject] = iter([_whole_article(splitter, prolog, where)])
    else:
        parsed = _articles(splitter, prolog, where)
    counts: Counter = Counter()
    for position, result in enumerate(parsed, 1):
        if isinstance(result, Reject):
            item = result
        else:
            item = parse_article(result[0], f"{where}#{position}")
            if result[1]:
                counts["repaired"] += 1
                logger.warning("%s#%d: kept with %d invalid bytes or characters replaced by U+FFFD",
                               where, position, result[1])
        counts["documents" if isinstance(item, Document) else "rejects"] += 1
        yield item
    logger.debug("%s: %s", where, dict(counts))


def read_jats(url: str, max_record: int = MAX_RECORD_BYTES) -> Iterator[Document | Reject]:
    """Stream the documents and rejects of one JATS file (``.xml``/``.nxml``, ``.gz`` or not).

    Raises ``FileNotFoundError`` for a missing input and ``ValueError`` when the root element is
    not ``article`` or ``pmc-articleset``. An article of a set that cannot be read is one
    ``Reject`` named by its id (``pmc:PMC<n>``, else ``pmid:<n>``) when its bytes show one, else
    ``<url>@<start>-<end>``, and the other articles still come out; a broken single-article file is
    one ``Reject`` naming the file. Bad bytes are repaired as in ``read_pubmed``.
    """
    with open_input(url) as stream:
        yield from iter_jats(stream, url, max_record)


def _unsafe(member: tarfile.TarInfo) -> str | None:
    """Why a package member must not be read (absolute path, ``..``, link, device), or None."""
    name = member.name.replace("\\", "/")
    if name.startswith("/"):
        return "absolute path"
    if ".." in name.split("/"):
        return "'..' path component"
    if member.issym() or member.islnk():
        return f"link to {member.linkname!r}"
    if member.isdev():
        return "device or FIFO"
    return None


class _MemberStream(io.RawIOBase):
    """A package member's bytes. A broken package stream under it raises ``tarfile.ReadError``, so
    it ends the package instead of passing for one malformed article."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self.raw.read(len(buffer))
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise tarfile.ReadError(f"broken package stream: {exc}") from exc
        buffer[: len(data)] = data
        return len(data)


def _member_articles(tar: tarfile.TarFile, member: tarfile.TarInfo, where: str, max_record: int) -> Iterator[Document | Reject]:
    """The documents and rejects of one article member (``.gz`` or not), read as a stream."""
    stream: BinaryIO = io.BufferedReader(_MemberStream(tar.extractfile(member)), buffer_size=1 << 16)
    if member.name.lower().endswith(".gz"):
        stream = io.BufferedReader(GunzipStream(stream), buffer_size=1 << 16)
    try:
        yield from iter_jats(stream, where, max_record)
    except ValueError as exc:  # one member that is not JATS does not spoil the package
        yield read_reject("unknown_root", where, str(exc))


def iter_jats_package(stream: BinaryIO, url: str, max_record: int = MAX_RECORD_BYTES) -> Iterator[Document | Reject]:
    """Articles of an open tar stream (plain or gzipped); a broken stream ends with a
    ``malformed_package`` reject after everything read before the break."""
    counts: Counter = Counter()
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                counts["members"] += 1
                where = f"{url}!{member.name}"
                why = _unsafe(member)
                if why is not None:
                    items: Iterator[Document | Reject] = iter([read_reject("unsafe_member", where, f"{why}; not read")])
                elif member.isfile() and member.name.lower().endswith(_MEMBER_SUFFIXES):
                    items = _member_articles(tar, member, where, max_record)
                else:
                    logger.debug("%s: skipped, not an article file", where)
                    counts["skipped"] += 1
                    continue
                for item in items:
                    counts["documents" if isinstance(item, Document) else item.reason] += 1
                    yield item
    except _BROKEN_PACKAGE as exc:
        logger.warning("%s: broken package after %d members: %s", url, counts["members"], exc)
        counts["malformed_package"] += 1
        yield read_reject("malformed_package", url, f"{type(exc).__name__}: {exc}")
    logger.info("%s: %s", url, dict(counts))


def read_jats_package(url: str, max_record: int = MAX_RECORD_BYTES) -> Iterator[Document | Reject]:
    """Stream the documents and rejects of a ``.tar.gz``/``.tgz``/``.tar`` package of articles.

    Members are read as streams, never extracted. Members named ``.xml``/``.nxml`` (``.gz`` or
    not) are articles; other files are skipped; unsafe members (absolute paths, ``..``, links,
    devices) become ``unsafe_member`` rejects and are never read. Raises ``FileNotFoundError``
    for a missing input.
    """
    with open_input(url) as stream:
        if url.lower().endswith(".tgz"):  # our gunzip checks the CRC; tarfile's stream mode does not
            stream = io.BufferedReader(GunzipStream(stream), buffer_size=1 << 16)
        yield from iter_jats_package(stream, url, max_record)
