"""Tests of what the XML readers share: cutting a stream into records, repairing bad bytes, numbers."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest
from lxml import etree

from bulkner.connectors.fs import open_input
from bulkner.connectors.xmlstream import (END_OF_INPUT, HEAD_BYTES, INT32_MAX, MAX_REPAIRS, Chunk, RecordError,
                                          RecordSplitter, bounded_int, parse_document, read_record, safe_parser)

RECORDS = frozenset({"PubmedArticle", "DeleteCitation"})
A = b"<PubmedArticle><PMID>1</PMID></PubmedArticle>"
B = b'<PubmedArticle a="x"><MedlineCitation><PMID>2</PMID></MedlineCitation></PubmedArticle >'
C = b"<PubmedArticle><PMID>3</PMID><T><![CDATA[a </PubmedArticle> <PubmedArticle> ]] ]>]]></T></PubmedArticle>"


class Trickle(io.RawIOBase):
    """A stream that hands out at most ``size`` bytes per read: every tag gets cut by a read."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size, self.pos = data, size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        piece = self.data[self.pos : self.pos + min(self.size, len(buffer))]
        buffer[: len(piece)] = piece
        self.pos += len(piece)
        return len(piece)


def _split(data: bytes, size: int = 1 << 20) -> list[Chunk]:
    splitter = RecordSplitter(Trickle(data, size))
    splitter.prolog()
    return list(splitter.chunks(RECORDS))


HEAD = b'<?xml version="1.0"?>\n<!DOCTYPE PubmedArticleSet [<!ENTITY e "a>b]">]>\n<PubmedArticleSet>'
CASES = [  # (what follows HEAD, the chunks as (tag, data, cut))
    (A + b"\n" + B + b"</PubmedArticleSet>\n", [("PubmedArticle", A, None), ("PubmedArticle", B, None)]),
    (A + b"<!-- c --><?pi?>" + B + b"</PubmedArticleSet>", [("PubmedArticle", A, None), ("PubmedArticle", B, None)]),
    (A + b" stray " + B + b"</PubmedArticleSet>",
     [("PubmedArticle", A, None), (None, b" stray ", "stray content between records"), ("PubmedArticle", B, None)]),
    (A[:-1] + B + b"</PubmedArticleSet>",  # a broken end tag: cut where the next record starts
     [("PubmedArticle", A[:-1], "<PubmedArticle> before </PubmedArticle>"), ("PubmedArticle", B, None)]),
    (A + B[:-16] + b"</PubmedArticleSet>",
     [("PubmedArticle", A, None), ("PubmedArticle", B[:-16], "</PubmedArticleSet> before </PubmedArticle>")]),
    (A + B[:30], [("PubmedArticle", A, None), ("PubmedArticle", B[:30], END_OF_INPUT)]),  # truncated
    (A + b"\n</PubmedArtic", [("PubmedArticle", A, None)]),  # cut in the root's end tag: nothing lost
    (A + b"<PubmedArt", [("PubmedArticle", A, None), (None, b"<PubmedArt", f"{END_OF_INPUT}, between records")]),
    (A + b"</PubmedArticleSet>\n<!-- end -->\n", [("PubmedArticle", A, None)]),
    (A + b"</PubmedArticleSet><PubmedArticle>", [("PubmedArticle", A, None),
                                                 (None, b"<PubmedArticle>", "content after the root element")]),
    (b"<DeleteCitation/>" + A + b"</PubmedArticleSet>",  # self-closing: cut at the next record, parses whole
     [("DeleteCitation", b"<DeleteCitation/>", "<PubmedArticle> before </DeleteCitation>"),
      ("PubmedArticle", A, None)]),
    (b"<PubmedArticleSetX/>" + A + b"</PubmedArticleSet>",  # a longer name is not the root's
     [(None, b"<PubmedArticleSetX/>", "stray content between records"), ("PubmedArticle", A, None)]),
    # issue 26, case 9: record tags inside CDATA, comments and PIs are text, not markup
    (C + b"<!-- <PubmedArticle> </PubmedArticleSet> -->" + B + b"</PubmedArticleSet>",
     [("PubmedArticle", C, None), ("PubmedArticle", B, None)]),
    (A + b"<?pi </PubmedArticle> ?>" + B + b"</PubmedArticleSet>", [("PubmedArticle", A, None), ("PubmedArticle", B, None)]),
    (C[:40], [("PubmedArticle", C[:40], END_OF_INPUT)]),  # the input ends inside the CDATA section
    # a PI that lost its "?>" ("<?properties open_access?>" cut to "<?p>", a PMC article set) does not
    # hide the next record's start tag up to that record's own "?>": past _MAX_PI bytes its "<?" is text
    (A.replace(b"<PMID>", b"<?p><PMID>") + b" " * 5000 + B.replace(b"<MedlineCitation>", b"<?pi?><MedlineCitation>") + b"</PubmedArticleSet>",
     [("PubmedArticle", A.replace(b"<PMID>", b"<?p><PMID>"), None), ("PubmedArticle", B.replace(b"<MedlineCitation>", b"<?pi?><MedlineCitation>"), None)]),
]


@pytest.mark.parametrize(("body", "expected"), CASES)
@pytest.mark.parametrize("size", [1, 7, 1 << 20])
def test_chunks(body: bytes, expected: list, size: int) -> None:
    chunks = _split(HEAD + body, size)
    assert [(c.tag, c.data, c.cut) for c in chunks] == expected
    assert all((HEAD + body)[c.start : c.end] == c.data for c in chunks if c.cut != "content after the root element")


def test_a_record_s_bytes_read_as_inside_the_file() -> None:
    data = (b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE PubmedArticleSet [<!ENTITY t "x">]>\n'
            b'<PubmedArticleSet xmlns:m="urn:m"><PubmedArticle><m:x>&t; &amp;</m:x></PubmedArticle></PubmedArticleSet>')
    splitter = RecordSplitter(io.BytesIO(data))
    prolog = splitter.prolog()
    [chunk] = splitter.chunks(RECORDS)
    record, repairs = read_record(prolog, chunk, safe_parser())
    assert (record[0].tag, repairs) == ("{urn:m}x", 0)  # the root's namespace, the DTD's entity (not expanded)
    assert [type(n) for n in record[0]] == [etree._Entity] and record[0][0].tail == " &"


@pytest.mark.parametrize("data", [b"", b"   ", b"not xml", b"\x00\x01binary", b"<PubmedArticleSet", b"<!-- x",
                                  b"< PubmedArticleSet>" + b"x" * (3 << 20)])
def test_no_root_is_a_syntax_error(data: bytes) -> None:
    with pytest.raises(etree.XMLSyntaxError):
        RecordSplitter(io.BytesIO(data)).prolog()


def test_prolog() -> None:
    splitter = RecordSplitter(io.BytesIO(b"\xef\xbb\xbf<?xml version='1.0' encoding='ISO-8859-1'?><r xmlns='urn:x'/>"))
    prolog = splitter.prolog()
    assert (prolog.root, prolog.utf8, list(splitter.chunks(RECORDS))) == ("{urn:x}r", False, [])


def test_memory_holds_one_record_and_one_block() -> None:
    record = b"<PubmedArticle><PMID>1</PMID><T>" + b"x" * 5000 + b"</T></PubmedArticle>\n"
    big = b"<PubmedArticle><T>" + b"y" * (3 << 20) + b"</T></PubmedArticle>"
    data = b"<PubmedArticleSet>" + record * 2000 + big + record * 500 + b"</PubmedArticleSet>"
    splitter = RecordSplitter(io.BufferedReader(Trickle(data, 1 << 16)))
    splitter.prolog()
    buffered = [len(splitter.buf) for _ in splitter.chunks(RECORDS)]
    assert len(buffered) == 2501 and len(data) > 13 << 20
    assert max(buffered) <= len(big) + (2 << 20)  # the largest record and a block or two
    assert max(buffered[-100:]) <= 2 << 20  # and the large record is let go


@pytest.mark.parametrize("inside", [b"y", b"<!-- c -->", b"<![CDATA[ ]]>"], ids=["text", "comments", "cdata"])
def test_a_record_over_the_size_limit_is_never_held_whole(inside: bytes) -> None:
    """Issue 26, case 8: a record past ``max_record`` keeps only its first bytes while the rest is
    scanned for its end (through comments and CDATA too); it reads as ``record_too_large`` and the
    records after it read as before."""
    import tracemalloc

    record = b"<PubmedArticle><PMID>1</PMID><T>" + b"x" * 5000 + b"</T></PubmedArticle>"
    big = b"<PubmedArticle><PMID>7</PMID><T>" + inside * ((10 << 20) // len(inside)) + b"</T></PubmedArticle>"
    data = b"<PubmedArticleSet>" + record * 200 + big + record * 50 + b"</PubmedArticleSet>"
    splitter = RecordSplitter(io.BufferedReader(Trickle(data, 1 << 16)), max_record=1 << 20)
    prolog = splitter.prolog()
    tracemalloc.start()
    chunks = list(splitter.chunks(RECORDS))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20 < len(big) // 2  # the limit, a block and their copies; never the 10 MB record
    assert [c.data for c in chunks] == [record] * 200 + [big[:HEAD_BYTES]] + [record] * 50
    assert [c.whole for c in chunks].index(False) == 200 and chunks[200].end - chunks[200].start == len(big)
    with pytest.raises(RecordError, match=f"{len(big):,} bytes or more: over the record size limit") as error:
        read_record(prolog, chunks[200], safe_parser())
    assert error.value.reason == "record_too_large"


# --- repairs ------------------------------------------------------------------------------------

REPAIRS = [  # (bytes in a text node, repairs, the text read)
    (b"ok \xef\xbf\xbd", 0, "ok \ufffd"),  # a real U+FFFD is no repair
    (b"a\xffb", 1, "a\ufffdb"),
    (b"\xe9t\xe9", 2, "\ufffdt\ufffd"),  # Latin-1
    (b"\xce", 1, "\ufffd"),  # a cut multi-byte sequence
    (b"\xed\xa0\x80", 3, "\ufffd\ufffd\ufffd"),  # an encoded surrogate
    (b"a\x07b\x00c", 2, "a\ufffdb\ufffdc"),
    (b"&#x7;&#X1F;&#0;&#27;&#xFFFE;&#xD800;", 6, "\ufffd" * 6),
    (b"&#x9;&#10;&#xD;&#x20;&#xE9;&#127;", 0, "\t\n\r \xe9\x7f"),  # allowed: untouched
    (b"\xff" * MAX_REPAIRS, MAX_REPAIRS, "\ufffd" * MAX_REPAIRS),
]


@pytest.mark.parametrize(("raw", "repairs", "text"), REPAIRS)
def test_repairs(raw: bytes, repairs: int, text: str) -> None:
    root, count = parse_document([b"<a>" + raw + b"</a>"], safe_parser(), utf8=True)
    assert (root.text, count) == (text, repairs)


def test_too_many_repairs_and_other_encodings_and_markup_errors_are_not_repaired() -> None:
    with pytest.raises(RecordError, match="17 invalid") as caught:
        parse_document([b"<a>" + b"\xff" * (MAX_REPAIRS + 1) + b"</a>"], safe_parser(), utf8=True)
    assert caught.value.reason == "bad_encoding"
    with pytest.raises(etree.XMLSyntaxError):
        parse_document([b"<a>\x07</a>"], safe_parser(), utf8=False)
    with pytest.raises(etree.XMLSyntaxError, match="Invalid bytes"):  # the first error, not the repaired one's
        parse_document([b"<a>\xff</b>"], safe_parser(), utf8=True)


@pytest.mark.parametrize(("raw", "low", "high", "value"), [
    ("1", 1, INT32_MAX, 1), ("0007", 1, INT32_MAX, 7), (str(INT32_MAX), 1, INT32_MAX, INT32_MAX),
    (str(INT32_MAX + 1), 1, INT32_MAX, None), ("0", 1, INT32_MAX, None), ("0", 0, 9, 0), ("", 1, 9, None),
    ("1" * 5000, 1, INT32_MAX, None), ("00000000000000000001", 1, 9, 1), ("١", 1, 9, None), ("+1", 1, 9, None),
    (" 1", 1, 9, None), ("1e3", 1, 9999, None),
])
def test_bounded_int(raw: str, low: int, high: int, value) -> None:
    assert bounded_int(raw, low, high) == value


def test_gzip_read_error_ends_the_record_it_falls_in(tmp_path: Path) -> None:
    path = tmp_path / "x.xml.gz"
    path.write_bytes(gzip.compress(HEAD + A + B[:20]) + b"broken gzip member")
    with open_input(str(path)) as stream:
        splitter = RecordSplitter(stream)
        splitter.prolog()
        chunks = list(splitter.chunks(RECORDS))
    assert [(c.tag, c.data) for c in chunks] == [("PubmedArticle", A), ("PubmedArticle", B[:20])]
    assert chunks[1].cut.startswith(END_OF_INPUT) and "BadGzipFile" in chunks[1].cut
