"""What the XML readers (PubMed, JATS) share: cutting a stream into its top-level records at the
byte level, parsing one record safely, text flattening, number checks and the errors that mean
broken bytes.

A file of many records (a PubMed file, a PMC article set) is not parsed as one document: one bad
byte would end the parse and lose every record after it. ``RecordSplitter`` finds each record's
bytes by its start and end tags (a raw ``<`` is always markup in XML, so no parse is needed), and
each record is parsed on its own, with the file's prolog (declaration, DOCTYPE, root start tag)
around it so that it reads exactly as it would inside the file. A broken record costs that record
only, and memory stays bounded by one record: a record (or stray stretch) longer than the size
limit (``--max-record-mb``) is not buffered past it, and becomes a ``record_too_large`` reject
named from its first bytes. Records are fed to the parser piece by piece, so their bytes are held
once, beside their tree. Comments, CDATA sections and processing
instructions are skipped whole while cutting: a record tag written inside one is text, not markup.
A UTF-16 or UTF-32 file (told by its byte order mark, or by its first characters ``<?`` without
one) is decoded to UTF-8 as it streams and its declared encoding rewritten, so it reads like the
same file in UTF-8; the byte offsets of its rejects are those of the UTF-8 stream.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import logging
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import BinaryIO, NamedTuple

from lxml import etree

from bulkner.config import MAX_RECORD_BYTES
from bulkner.schema import Reject, read_reject

logger = logging.getLogger(__name__)

MALFORMED = (etree.XMLSyntaxError, EOFError, gzip.BadGzipFile, zlib.error)
"""Errors that mean the bytes are broken (bad or truncated XML or gzip), not the reader."""
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_REPAIRS = 16
"""A record needing more repairs than this (invalid UTF-8 sequences, forbidden control characters)
is rejected, not kept: it is most likely in another encoding and its text would be full of holes."""
END_OF_INPUT = "end of input"
"""How ``Chunk.cut`` starts for a record the readable input ends inside: a truncated file, or a
read error (corrupt gzip data) after which nothing more can be read."""

HEAD_BYTES = 1 << 16
"""Bytes kept of a record over the size limit: enough for the id that names its reject."""
_BLOCK = 1 << 20
_SLACK = 64
"""Bytes re-scanned after each read: longer than any tag name we look for."""
_MAX_PROLOG = 64 << 20
"""No root start tag within this many bytes: not a file we read (the prolog is held whole)."""
_MISC = re.compile(rb"<!--.*?-->|<\?.*?\?>", re.DOTALL)
_START_TAG = re.compile(rb"<([^\s/>!?]+)(?:[^>\"']|\"[^\"]*\"|'[^']*')*>")
_ENCODING = re.compile(rb"""^<\?xml[^>]*\bencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_FFFD = "\ufffd".encode()
_MAX_PI = 4096
"""Longest processing instruction looked for: one whose ``?>`` is not within this many bytes is
taken as broken and its ``<?`` read as text (PMC's are a few dozen bytes; one that lost its ``?>``,
``<?properties open_access?>`` cut to ``<?p>``, would otherwise hide every tag up to the next
article's, that article's start tag included)."""
_SKIPPED = {b"<!--": (b"-->", None), b"<![CDATA[": (b"]]>", None), b"<?": (b"?>", _MAX_PI)}
"""Openers of what holds no markup, what ends each and how far it may run (None: anywhere):
skipped whole while looking for tags."""
_WIDE = (  # (how a file starts, its encoding): byte order marks first, UTF-32 before UTF-16
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
    (b"<\0\0\0?\0\0\0", "utf-32-le"), (b"\0\0\0<\0\0\0?", "utf-32-be"),
    (b"<\0?\0", "utf-16-le"), (b"\0<\0?", "utf-16-be"),
)
"""UTF-16 and UTF-32 inputs, told by their first bytes (XML 1.0, appendix F)."""
_BAD_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_BAD_REF = re.compile(
    rb"&#(?:[xX]0*(?:[0-8bBcCeEfF]|1[0-9a-fA-F]|[dD][89a-fA-F][0-9a-fA-F]{2}|[fF]{3}[eEfF])"
    rb"|0*(?:[0-8]|1[124-9]|2[0-9]|3[01]|6553[45]));"
)
"""Character references to characters XML 1.0 forbids (C0 controls, surrogates, U+FFFE/U+FFFF)."""


def normalise_text(el: etree._Element | None) -> str:
    """Full text content of ``el`` (inline markup included), whitespace runs made one space.

    Any Unicode whitespace (no-break spaces included) counts; an unexpanded entity reference
    stays as its literal ``&name;`` text. Words split only by markup are joined (``Ca<sup>2+``
    gives ``Ca2+``); no text is dropped.
    """
    if el is None:
        return ""
    return " ".join("".join(el.itertext()).split())


def bounded_int(raw: str, low: int, high: int) -> int | None:
    """``raw`` (ASCII digits, leading zeros allowed) as an int in ``[low, high]``, else None."""
    if not raw.isascii() or not raw.isdigit() or len(raw.lstrip("0")) > len(str(high)):
        return None
    value = int(raw)
    return value if low <= value <= high else None


def safe_parser() -> etree.XMLParser:
    """A parser that never loads DTDs, touches the network or expands entities."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                           remove_comments=True, remove_pis=True)


class Prolog(NamedTuple):
    """What comes before a file's first record, put around each record to parse it alone."""

    root: str
    """The root element's tag as lxml names it (``{namespace}name`` when it has one)."""
    before: bytes
    """XML declaration, comments and DOCTYPE (with its internal subset) before the root."""
    start_tag: bytes
    """The root's start tag as written (its namespace declarations apply to every record)."""
    end_tag: bytes
    """The root's end tag."""
    utf8: bool
    """Whether the file is UTF-8 (declared or by default): only then are bad bytes repaired."""

    def wrap(self, record: bytes) -> tuple[bytes, ...]:
        """The pieces of a standalone document holding ``record`` the way the file holds it."""
        return self.before, self.start_tag, record, self.end_tag


class Chunk(NamedTuple):
    """The bytes of one top-level record, or of stray content between records (``tag`` None)."""

    tag: str | None
    start: int
    """Offset of the first byte in the (decompressed) stream."""
    end: int
    """Offset after the last byte."""
    data: bytes
    """Its bytes; only the first ``HEAD_BYTES`` of them when it is over the size limit."""
    cut: str | None = None
    """Why the record ends without its end tag (``END_OF_INPUT``, the tag found instead, a read
    error); None when it ends with it."""

    @property
    def whole(self) -> bool:
        """False when ``data`` holds only the first bytes of a chunk over the size limit."""
        return len(self.data) == self.end - self.start


def _blank(data: bytes) -> bool:
    """Whether ``data`` holds only whitespace, comments and processing instructions."""
    return not data.strip() or not _MISC.sub(b"", data).strip()


def _doctype_end(buf: bytearray, pos: int) -> int:
    """Index after the ``>`` closing the DOCTYPE at ``pos`` (quotes and internal subset skipped),
    or -1 when it does not end in ``buf``."""
    quote, depth = 0, 0
    for i in range(pos, len(buf)):
        c = buf[i]
        if quote:
            quote = 0 if c == quote else quote
        elif c in b"\"'":
            quote = c
        elif c == ord("["):
            depth += 1
        elif c == ord("]"):
            depth -= 1
        elif c == ord(">") and depth == 0:
            return i + 1
    return -1


class RecordError(Exception):
    """One record's bytes cannot be read; ``reason`` is the reject reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _repair(document: bytes) -> tuple[bytes, int]:
    """``document`` with each invalid UTF-8 sequence and each character XML forbids (raw or as a
    character reference) replaced by U+FFFD, and how many were replaced."""
    text = document.decode("utf-8", errors="replace")
    invalid = text.count("\ufffd") - document.count(_FFFD)
    text, controls = _BAD_CHAR.subn("\ufffd", text)
    fixed, refs = _BAD_REF.subn(b"&#xFFFD;", text.encode("utf-8"))
    return fixed, invalid + controls + refs


def _feed(pieces: Iterable[bytes], parser: etree.XMLParser) -> etree._Element:
    """The root of the document made of ``pieces``, fed to ``parser`` one by one (never joined)."""
    try:
        for piece in pieces:
            parser.feed(piece)
        return parser.close()
    except etree.XMLSyntaxError:
        with contextlib.suppress(etree.XMLSyntaxError):
            parser.close()  # ready for the next document
        raise


def parse_document(pieces: Sequence[bytes], parser: etree.XMLParser, utf8: bool) -> tuple[etree._Element, int]:
    """Parse a standalone document given in pieces; one that is not well-formed only because of
    invalid UTF-8 or forbidden characters is parsed again with each of them replaced by U+FFFD.

    Returns the root element and the number of replacements. Raises the first parse's
    ``etree.XMLSyntaxError`` when repairing does not help, and ``RecordError`` (``bad_encoding``)
    when it would take more than ``MAX_REPAIRS`` replacements.
    """
    try:
        return _feed(pieces, parser), 0
    except etree.XMLSyntaxError as exc:
        document = b"".join(pieces)
        fixed, repairs = _repair(document) if utf8 else (document, 0)
        if not repairs:
            raise
        if repairs > MAX_REPAIRS:
            raise RecordError("bad_encoding", f"{repairs} invalid bytes or characters (at most {MAX_REPAIRS} are "
                                              f"replaced): {exc}") from None
        try:
            return _feed((fixed,), parser), repairs
        except etree.XMLSyntaxError:
            raise exc from None


def read_record(prolog: Prolog, chunk: Chunk, parser: etree.XMLParser) -> tuple[etree._Element, int]:
    """The element of a record chunk, parsed inside the file's prolog, and its repair count.

    Raises ``RecordError``: ``malformed_xml`` for stray content and for a record that is not
    well-formed or that the readable input ends inside (the detail then starts with how it was
    cut: ``end of input...``), ``bad_encoding`` (see ``parse_document``), ``record_too_large``
    for a record over the size limit.
    """
    if chunk.tag is None:
        excerpt = chunk.data[:80].decode("utf-8", errors="replace")
        raise RecordError("malformed_xml", f"{chunk.cut}: {excerpt!r}")
    if not chunk.whole:
        raise too_large(chunk.end - chunk.start)
    try:
        root, repairs = parse_document(prolog.wrap(chunk.data), parser, prolog.utf8)
    except etree.XMLSyntaxError as exc:
        raise RecordError("malformed_xml", f"{chunk.cut}: {exc}" if chunk.cut else str(exc)) from None
    if len(root) != 1:
        raise RecordError("malformed_xml", f"<{chunk.tag}> is followed by other content ({chunk.cut})")
    return root[0], repairs


def too_large(size: int) -> RecordError:
    """The error of a record of ``size`` bytes or more, over the size limit."""
    return RecordError("record_too_large", f"{size:,} bytes or more: over the record size limit (--max-record-mb)")


class RecordSplitter:
    """Cuts an XML byte stream into its top-level records without parsing them.

    ``prolog()`` reads through the root's start tag; ``chunks(records)`` then yields one ``Chunk``
    per element named in ``records`` directly under the root, and one per stretch of stray content
    between them. A record ends at its end tag or, when that is missing, where the next record or
    the root's end tag starts; the end of the input or a read error ends the last one. Memory
    holds one record and one block of input: a chunk that grows past ``max_record`` bytes keeps
    only its first ``HEAD_BYTES`` (``Chunk.whole`` is then False) while the rest is scanned for
    its end.
    """

    def __init__(self, stream: BinaryIO, max_record: int = MAX_RECORD_BYTES) -> None:
        self.stream = stream
        self.max_record = max_record
        self._head_size = min(HEAD_BYTES, max_record)
        self._head: tuple[int, bytes] | None = None
        """(offset, first bytes) of the chunk over the size limit being scanned, if any."""
        self._read: Callable[[int], bytes] = getattr(stream, "read1", stream.read)
        """``read1`` where the stream has it: a read error then loses no byte decompressed before it."""
        self.encoding: str | None = None
        """The UTF-16/32 encoding the input is decoded from, or None for an input read as it is."""
        self.buf = bytearray()
        self.base = 0
        """Offset in the stream of ``buf[0]``."""
        self.root_name = b""
        self.empty_root = False
        self.cut = END_OF_INPUT
        """How the readable input ended (``END_OF_INPUT``, or it and the read error)."""

    def _drop(self, keep: int) -> None:
        """Drop the buffer before index ``keep``."""
        del self.buf[:keep]
        self.base += keep

    def _more(self, keep: int) -> bool:
        """Drop the buffer before index ``keep`` and append the next block; False at the end of
        the input."""
        self._drop(keep)
        block = self._read(_BLOCK)
        self.buf += block
        return bool(block)

    def _prolog_item(self, pos: int) -> tuple[int, bool]:
        """End of the prolog item at ``pos`` (declaration, comment, DOCTYPE, root start tag) and
        whether it is the root's start tag; end -1 when it is not complete in the buffer, -2 when
        it is not well-formed."""
        buf = self.buf
        if buf.startswith(b"<?", pos):
            end = buf.find(b"?>", pos)
            return (end + 2 if end >= 0 else -1), False
        if buf.startswith(b"<!--", pos):
            end = buf.find(b"-->", pos)
            return (end + 3 if end >= 0 else -1), False
        if buf.startswith(b"<!DOCTYPE", pos):
            return _doctype_end(buf, pos), False
        match = _START_TAG.match(buf, pos)
        if match is None and buf.find(b">", pos) >= 0:
            return -2, True  # a complete start tag that is not well-formed
        return (match.end() if match else -1), True

    def prolog(self) -> Prolog:
        """Read through the root's start tag. Raises ``etree.XMLSyntaxError`` when the input does
        not start with a well-formed prolog and root start tag (an empty file, text, binary)."""
        self._more(0)
        self._decode_wide()
        pos = 3 if self.buf.startswith(b"\xef\xbb\xbf") else 0
        while True:
            while pos < len(self.buf) and self.buf[pos] in b" \t\r\n":
                pos += 1
            if pos < len(self.buf) and self.buf[pos] != ord("<"):  # text before the root
                end, is_root = -2, False
            else:
                end, is_root = self._prolog_item(pos) if pos < len(self.buf) else (-1, False)
            if end >= 0 and is_root:
                break
            if end >= 0:
                pos = end
            elif end == -2 or len(self.buf) > _MAX_PROLOG or not self._more(0):
                etree.fromstring(bytes(self.buf), safe_parser())  # raises lxml's own message
                raise etree.XMLSyntaxError("no root element", None, 1, 1)
        before, start_tag = bytes(self.buf[:pos]), bytes(self.buf[pos:end])
        declared = _ENCODING.match(before.lstrip(b"\xef\xbb\xbf"))
        if declared is not None and self.encoding is not None:  # the bytes are UTF-8 now
            before = before[: declared.start(1)] + b"UTF-8" + before[declared.end(1) :]
            declared = None
        self.root_name = _START_TAG.match(start_tag).group(1)
        self.empty_root = start_tag.endswith(b"/>")
        end_tag = b"</" + self.root_name + b">"
        root = etree.fromstring(before + start_tag + (b"" if self.empty_root else end_tag), safe_parser())
        utf8 = declared is None or declared.group(1).lower() in (b"utf-8", b"utf8")
        self._drop(end)
        return Prolog(root.tag, before, start_tag, end_tag, utf8)

    def _decode_wide(self) -> None:
        """When the input is UTF-16 or UTF-32 (``_WIDE``), decode it to UTF-8 from here on: the
        buffer now, every later read as it comes."""
        encoding = next((enc for start, enc in _WIDE if self.buf.startswith(start)), None)
        if encoding is None:
            return
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        raw = self._read

        def read(size: int) -> bytes:
            while block := raw(size):
                if text := decoder.decode(block):
                    return text.encode("utf-8")
            return decoder.decode(b"", final=True).encode("utf-8")

        self.encoding, self._read = encoding, read
        self.buf[:] = decoder.decode(bytes(self.buf)).encode("utf-8")
        logger.info("input is %s: decoded to UTF-8 as it is read", encoding.upper())

    def rest(self) -> list[bytes]:
        """The rest of the input after the root's start tag, in blocks (a file whose root is its
        only record). Raises ``RecordError`` (``record_too_large``) once it is over the size limit."""
        blocks, size = [bytes(self.buf)], len(self.buf)
        while block := self._read(_BLOCK):
            size += len(block)
            if size > self.max_record:
                raise too_large(size)
            blocks.append(block)
        return blocks

    def chunks(self, records: frozenset[str]) -> Iterator[Chunk]:
        """The record chunks (and stray content) under the root, in file order; call ``prolog``
        first."""
        if self.empty_root:
            return
        root, names = self.root_name, {name.encode() for name in records}
        either = b"|".join(re.escape(name) for name in sorted(names | {root}))
        tags = re.compile(rb"<(?:/(" + either + rb")\s*>|(" + either + rb")[\s/>])|<!--|<!\[CDATA\[|<\?")
        start = pos = self.base
        open_tag: bytes | None = None
        while (tag := self._next_tag(tags, pos, start)) is not None:
            closing, name, at, pos = tag
            if open_tag is None:
                if closing and name == root:
                    yield from self._gap(start, at)
                    yield from self._after_root(pos)
                    return
                if not closing and name in names:
                    yield from self._gap(start, at)
                    start, open_tag = at, name
            elif closing and name == open_tag:
                yield self._chunk(open_tag, start, pos, None)
                start, open_tag = pos, None
            elif name == root if closing else name in names:  # the end tag is missing
                found = ("</" if closing else "<") + name.decode()
                yield self._chunk(open_tag, start, at, f"{found}> before </{open_tag.decode()}>")
                start, open_tag, pos = at, None, at  # read this tag again, between records
        yield from self._end(start, open_tag)

    def _next_tag(self, tags: re.Pattern[bytes], pos: int, keep: int) -> tuple[bool, bytes, int, int] | None:
        """The next tag ``tags`` finds from offset ``pos`` (whether it closes, its name, its start
        and end offsets), reading blocks as needed and dropping the bytes before offset ``keep``;
        None at the end of the readable input (``self.cut`` says how it ended)."""
        while True:
            match = tags.search(self.buf, pos - self.base)
            if match is not None and match.lastindex is None:  # a comment, CDATA or PI: no markup inside
                pos = self._skip(*_SKIPPED[match.group()], self.base + match.end(), keep)
                if pos is None:
                    return None
                continue
            if match is not None:
                closing = match.group(1) is not None
                return closing, match.group(1 if closing else 2), self.base + match.start(), self.base + match.end()
            pos = max(pos, self.base + len(self.buf) - _SLACK)
            if not self._more_or_end(keep, pos):
                return None

    def _skip(self, terminator: bytes, limit: int | None, pos: int, keep: int) -> int | None:
        """The offset after the first ``terminator`` from offset ``pos``, reading blocks as needed;
        None when the readable input ends first. With a ``limit``, ``pos`` itself when the
        terminator is not within ``limit`` bytes (what opened there was text)."""
        start = pos
        while True:
            i = self.buf.find(terminator, pos - self.base)
            if i >= 0 and (limit is None or self.base + i <= start + limit):
                return self.base + i + len(terminator)
            if limit is not None and self.base + len(self.buf) >= start + limit + len(terminator):
                return max(start, self.base)
            pos = max(pos, self.base + len(self.buf) - len(terminator) + 1)
            if not self._more_or_end(keep, pos):
                return None

    def _more_or_end(self, keep: int, pos: int) -> bool:
        """``_more`` from offset ``keep`` (the start of the chunk being cut); at the end of the
        readable input False, with ``self.cut`` saying how it ended (a read error too). A chunk
        over the size limit keeps its first bytes aside and is buffered only from ``pos`` on (where
        the scan goes on)."""
        if self.base + len(self.buf) - keep > self.max_record:
            if self._head is None or self._head[0] != keep:
                self._head = keep, self._bytes(keep, keep + self._head_size)
            keep = pos
        try:
            if self._more(keep - self.base):
                return True
            self.cut = END_OF_INPUT
        except MALFORMED as exc:
            self.cut = f"{END_OF_INPUT} (unreadable after it: {type(exc).__name__}: {exc})"
        return False

    def _bytes(self, start: int, end: int | None = None) -> bytes:
        """The buffered bytes from offset ``start`` to offset ``end`` (the buffer's end if None);
        only the first bytes of a chunk over the size limit (``Chunk.whole``)."""
        if start < self.base and self._head is not None and self._head[0] == start:
            return self._head[1]  # the rest is no longer buffered
        begin, stop = start - self.base, len(self.buf) if end is None else end - self.base
        return bytes(self.buf[begin : stop if stop - begin <= self.max_record else begin + self._head_size])

    def _chunk(self, tag: bytes, start: int, end: int, cut: str | None) -> Chunk:
        return Chunk(tag.decode(), start, end, self._bytes(start, end), cut)

    def _gap(self, start: int, end: int) -> Iterator[Chunk]:
        """A chunk for what stands between two records, unless it is blank."""
        data = self._bytes(start, end)
        if not _blank(data):
            yield Chunk(None, start, end, data, "stray content between records")

    def _end(self, start: int, open_tag: bytes | None) -> Iterator[Chunk]:
        """A chunk for the record (or stray content) the readable input ends inside, if any."""
        logger.warning("input ends before </%s>: %s", self.root_name.decode(), self.cut)
        data, end = self._bytes(start), self.base + len(self.buf)
        if open_tag is not None:
            yield Chunk(open_tag.decode(), start, end, data, self.cut)
        elif not _blank(data) and not (b"</" + self.root_name + b">").startswith(data.strip()):
            yield Chunk(None, start, end, data, f"{self.cut}, between records")

    def _after_root(self, at: int) -> Iterator[Chunk]:
        """A chunk for content after the root's end tag (from offset ``at`` to the end), if any."""
        tail, end, beyond = self._bytes(at), self.base + len(self.buf), False
        try:
            while block := self._read(_BLOCK):
                end += len(block)
                if len(tail) < _BLOCK:
                    tail += block
                else:
                    beyond = beyond or bool(block.strip())
        except MALFORMED as exc:
            logger.warning("unreadable input after the root element: %s", exc)
        if beyond or not _blank(tail):
            yield Chunk(None, at, end, tail, "content after the root element")


def read_prolog(splitter: RecordSplitter, where: str, roots: frozenset[str], kind: str) -> Prolog | Reject:
    """The prolog of a stream whose root must be one of ``roots``, or one ``malformed_xml`` reject
    when no root can be read at all. Raises ``ValueError`` for another root (not ``kind`` XML)."""
    try:
        prolog = splitter.prolog()
    except MALFORMED as exc:
        logger.warning("%s: no readable root element: %s", where, exc)
        return read_reject("malformed_xml", where, f"{type(exc).__name__}: {exc}")
    if prolog.root not in roots:
        raise ValueError(f"{where}: unknown root element <{prolog.root}>, not {kind} XML")
    return prolog
