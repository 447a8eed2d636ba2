"""Which connector reads an input, and its records.

Formats (``--input-format``): ``pubmed`` (PubMed/MEDLINE XML), ``pmc`` (JATS/NLM articles, loose
or in ``.tar.gz`` packages), ``jsonl``, ``parquet`` and ``text`` (one document per file). ``auto``
decides by file name, and for ``.xml`` by the root element (``PubmedArticleSet`` or ``article``).
Directories and globs yield only the files some reader accepts: a ``README.txt`` or a manifest
beside the XML is skipped, not a failed shard (plain text files are read from a directory only
with ``--input-format text``).
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

from lxml import etree

from bulkner.config import InputConfig
from bulkner.connectors.fs import ACCEPT_THREADS, expand_inputs, inside, open_input
from bulkner.hardware import release_free_memory
from bulkner.schema import Document, Reject, Tombstone

Record = Document | Tombstone | Reject

READER_VERSION = 3
"""Version of what the readers make of an input (all connectors and ``collect``); part of the run
fingerprint. Bump it when a connector or ``collect`` changes the records an input gives."""

SUFFIXES: dict[str, tuple[str, ...]] = {
    "pubmed": (".xml", ".xml.gz"),
    "pmc": (".nxml", ".nxml.gz", ".xml", ".xml.gz", ".tar.gz", ".tgz", ".tar"),
    "jsonl": (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz"),
    "parquet": (".parquet",),
    "text": (".txt", ".txt.gz"),
}
"""File names each format reads; ``.xml`` is PubMed or PMC, told apart by the root element."""
PACKAGES = (".tar.gz", ".tgz", ".tar")


EMPTY = "empty"
"""What ``detect_format`` says of an ``.xml`` input with no content."""
ROOT_PROBE_BYTES = 512
"""Bytes fed to the parser at a time while looking for the root element."""


def root_element(url: str) -> str | None:
    """The local name of an XML input's root element, or None when it is not readable XML."""
    parser = etree.XMLPullParser(events=("start",), load_dtd=False, no_network=True, resolve_entities=False)
    try:  # fed in small pieces: lxml 6 parses ahead and raises for a broken record further on
        with open_input(url) as stream:
            while piece := stream.read(ROOT_PROBE_BYTES):
                try:
                    parser.feed(piece)
                finally:
                    for _, el in parser.read_events():
                        return el.tag.rpartition("}")[2]  # not QName: a corrupted tag name must not raise
    except (etree.XMLSyntaxError, EOFError, OSError, gzip.BadGzipFile, zlib.error):
        return None
    return None


def is_empty(url: str) -> bool:
    """True when ``url`` holds no content (0 bytes, or a ``.gz`` of nothing): a failed download."""
    try:
        with open_input(url) as stream:
            return not stream.read(1)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error):
        return False


def detect_format(url: str) -> str | None:
    """The format of ``url`` by its name, and for ``.xml`` by its root element (``empty`` for an
    ``.xml`` of no content: an input, to be reported as failed); None when no reader takes it
    (plain ``.txt`` is ``text``)."""
    name = url.lower()
    if name.endswith((".xml", ".xml.gz")):
        from bulkner.connectors.jats import JATS_ROOTS
        from bulkner.connectors.pubmed import ROOTS as PUBMED_ROOTS

        root = root_element(url)
        if root is None and is_empty(url):
            return EMPTY
        return "pubmed" if root in PUBMED_ROOTS else "pmc" if root in JATS_ROOTS else None
    return next((fmt for fmt, suffixes in SUFFIXES.items() if name.endswith(suffixes)), None)


def accepts(url: str, fmt: str) -> bool:
    """Whether a file found in a directory or glob is an input: by name for a given format; for
    ``auto``, any detected format but plain text."""
    if fmt == "auto":
        return detect_format(url) not in (None, "text")
    return url.lower().endswith(SUFFIXES[fmt])


def input_format(url: str, options: InputConfig) -> str:
    """The format ``url`` is read as; raises ``ValueError`` when ``auto`` cannot tell."""
    if options.format != "auto":
        return options.format
    fmt = detect_format(url)
    if fmt is None:
        raise ValueError(f"{url}: cannot tell its format (PubMed or PMC XML, .nxml, .tar.gz of articles, .jsonl, "
                         ".parquet, .txt); give --input-format")
    return fmt


def discover(inputs: Sequence[str], options: InputConfig, exclude: str | None = None) -> list[str]:
    """The input files of ``inputs`` (paths, directories, globs, URLs) in processing order, each
    one a reader takes; files found under the folder ``exclude`` (a run's output directory inside
    an input folder) are not. Raises ``ValueError`` for an input that matches nothing and for a
    file named directly whose format cannot be told."""
    accepted: set[str] = set()

    def accept(url: str) -> bool:
        if exclude is not None and inside(url, exclude):
            return False
        if accepts(url, options.format):
            accepted.add(url)
            return True
        return False

    urls = expand_inputs(inputs, accept)
    named = [u for u in urls if u not in accepted]  # files named directly: not sniffed yet
    with ThreadPoolExecutor(ACCEPT_THREADS) as pool:
        list(pool.map(lambda u: input_format(u, options), named))  # raises for a named file of no format
    return urls


def read_records(url: str, options: InputConfig = InputConfig()) -> Iterator[Record]:
    """Records of one shard: documents, tombstones and rejects, in file order.

    Raises ValueError for an input no reader takes, an empty input (the shard fails and the run
    goes on with the others), and a format's fatal problems (a wrong root element, a Parquet file
    without the id or text column).
    """
    fmt = input_format(url, options)
    if fmt == EMPTY or is_empty(url):
        raise ValueError(f"{url} is empty (no content: a failed download or copy?)")
    limit = options.max_record_bytes
    if fmt == "pubmed":
        from bulkner.connectors.pubmed import read_pubmed

        return read_pubmed(url, limit)
    if fmt == "pmc":
        from bulkner.connectors.jats import read_jats, read_jats_package

        return (read_jats_package if url.lower().endswith(PACKAGES) else read_jats)(url, limit)
    from bulkner.connectors import generic

    if fmt == "text":
        return generic.read_text(url, limit)
    reader = generic.read_jsonl if fmt == "jsonl" else generic.read_parquet
    return reader(url, options.id_field, options.text_field, limit)


class LatestRecords:
    """A shard's records as they stand at its end, streamed: within a shard the last record of a
    doc_id wins. A repeated document replaces the earlier one (counted in ``replaced``), a later
    DeleteCitation removes it (a tombstone), a later document revives it.

    Constant memory in the shard's size: the constructor reads the input once and keeps only the
    position of each doc_id's last record; iterating reads it again and yields the documents and
    tombstones found at those positions, with every reject, in file order (a document at its last
    position: the order ``dict``-based last-wins gives). ``documents`` and ``tombstones`` are the
    counts iteration will yield.
    """

    def __init__(self, url: str, options: InputConfig = InputConfig()) -> None:
        self.url, self.options = url, options
        self.last: dict[str, int] = {}
        """doc_id → position (in ``read_records``) of its last document or tombstone."""
        self.replaced = self.documents = self.tombstones = 0
        is_document: dict[str, bool] = {}
        with _quiet(logging.getLogger("bulkner.connectors")):  # the readers log once, on the pass that yields
            for position, record in enumerate(read_records(url, options)):
                if isinstance(record, Reject):
                    continue
                document = isinstance(record, Document)
                self.replaced += document and is_document.get(record.doc_id, False)
                is_document[record.doc_id] = document
                self.last[record.doc_id] = position
        self.documents = sum(is_document.values())
        self.tombstones = len(is_document) - self.documents
        release_free_memory()  # what the first pass parsed; the second runs in another thread

    def __iter__(self) -> Iterator[Record]:
        for position, record in enumerate(read_records(self.url, self.options)):
            if isinstance(record, Reject) or self.last.get(record.doc_id) == position:
                yield record


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """``logger`` and its children log nothing under ERROR inside the block."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def collect(url: str, options: InputConfig = InputConfig()) -> tuple[list[Document], list[Tombstone], list[Reject], int]:
    """A shard's records as they stand at its end (``LatestRecords``), in lists, and how many
    documents were replaced. For small inputs; shards are streamed with ``LatestRecords``."""
    records = LatestRecords(url, options)
    documents, tombstones, rejects = [], [], []
    for record in records:
        (documents if isinstance(record, Document) else tombstones if isinstance(record, Tombstone) else rejects).append(record)
    return documents, tombstones, rejects, records.replaced
