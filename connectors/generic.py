"""Readers for corpora that are not PubMed or PMC: JSON Lines, Parquet and plain text files.

A JSONL line or a Parquet row is one document with an id and a text field (names configurable);
a plain text file is one document named after the file. The text becomes one passage exactly as
given (no whitespace normalisation), so entity offsets point into the caller's own text.

Ids that already carry a namespace (``pmid:123``, ``doi:10.1/x``) are kept as they are; any other
id gets ``text:`` in front (``text:abc-17``), so ids from different sources never collide.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterator
from urllib.parse import unquote, urlparse

from bulkner.config import MAX_RECORD_BYTES
from bulkner.connectors.fs import open_input, open_random_access
from bulkner.schema import Document, Passage, Reject, read_reject

_NAMESPACED = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*:\S")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""Control characters: no id may hold one (XML exports and file names cannot carry them)."""
PARQUET_BATCH_ROWS = 4096
_LINE_BLOCK = 1 << 20


def doc_id(raw: str) -> str:
    """``raw`` when it has a namespace prefix (``pmid:1``), else ``text:<raw>``."""
    return raw if _NAMESPACED.match(raw) else f"text:{raw}"


def _too_large(size: int, what: str) -> str:
    return f"{what} is {size:,} bytes or more: over the record size limit (--max-record-mb)"


def _document(raw_id, text, where: str, id_field: str, text_field: str, max_record: int) -> Document | Reject:
    """One document from an id and a text value, or the reject that says which one is unusable
    (a text over ``max_record`` bytes of UTF-8 is ``record_too_large``)."""
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or not str(raw_id).strip():
        return read_reject("missing_id", where, f"field {id_field!r} is missing, empty or not a string/integer: {raw_id!r:.80}")
    raw = str(raw_id).strip()
    if _utf8_size(raw) is None:
        return read_reject("invalid_unicode", where, f"field {id_field!r} holds a lone surrogate: {ascii(raw):.80}")
    if _CONTROL.search(raw):
        return read_reject("bad_id", where, f"field {id_field!r} holds a control character: {ascii(raw):.80}")
    ident = doc_id(raw)
    if not isinstance(text, str):
        return read_reject("missing_text", ident, f"{where}: field {text_field!r} is missing or not a string")
    if not text.strip():
        return read_reject("no_text", ident, f"{where}: field {text_field!r} is empty")
    size = _utf8_size(text)
    if size is None:
        return read_reject("invalid_unicode", ident, f"{where}: field {text_field!r} holds a lone surrogate (no UTF-8 form)")
    if size > max_record:
        return read_reject("record_too_large", ident, f"{where}: {_too_large(size, f'field {text_field!r}')}")
    return Document(doc_id=ident, version=1, passages=(Passage("text", text),))


def _utf8_size(text: str) -> int | None:
    """Bytes of ``text`` in UTF-8; None when it holds a lone surrogate (valid JSON ``"\\ud800"``,
    no UTF-8 form)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def _lines(stream, max_record: int) -> Iterator[bytes | int]:
    """The lines of ``stream``, each read at most ``max_record`` bytes at a time: a longer line is
    skipped to its end and given as its size instead."""
    while line := stream.readline(max_record + 1):
        if len(line) <= max_record or line.endswith(b"\n"):
            yield line
            continue
        size = len(line)
        while not line.endswith(b"\n") and (line := stream.readline(_LINE_BLOCK)):
            size += len(line)
        yield size


def read_jsonl(url: str, id_field: str = "id", text_field: str = "text",
               max_record: int = MAX_RECORD_BYTES) -> Iterator[Document | Reject]:
    """Documents of a JSON Lines file (``.gz`` or not), one JSON object per line.

    A line that is not valid UTF-8, not JSON, not an object, or lacks a usable id or text is a
    reject naming its line number (an id with a control character is ``bad_id``, a lone surrogate
    escape in the id or text ``invalid_unicode``, a line over ``max_record`` bytes
    ``record_too_large``, never held whole); blank lines are skipped, a UTF-8 byte order mark
    before the first line is dropped.
    """
    with open_input(url) as stream:
        for number, line in enumerate(_lines(stream, max_record), 1):
            where = f"{url}:{number}"
            if isinstance(line, int):
                yield read_reject("record_too_large", where, _too_large(line, f"line {number}"))
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8-sig" if number == 1 else "utf-8"))
            except UnicodeDecodeError as err:
                yield read_reject("invalid_utf8", where, f"line {number} is not UTF-8: {err}")
                continue
            except json.JSONDecodeError as err:
                yield read_reject("bad_json", where, f"line {number} is not JSON: {err}")
                continue
            if not isinstance(record, dict):
                yield read_reject("bad_json", where, f"line {number} is a JSON {type(record).__name__}, not an object")
                continue
            yield _document(record.get(id_field), record.get(text_field), where, id_field, text_field, max_record)


def read_parquet(url: str, id_field: str = "id", text_field: str = "text",
                 max_record: int = MAX_RECORD_BYTES) -> Iterator[Document | Reject]:
    """Documents of a Parquet file's ``id_field`` and ``text_field`` columns, read in row batches.

    Raises ``ValueError`` naming the file's columns when either column is missing; a row with a
    null or empty value, or a text over ``max_record`` bytes, is a reject naming its row number.
    """
    import pyarrow.parquet as pq

    with open_random_access(url) as handle:
        parquet = pq.ParquetFile(handle)
        names = parquet.schema_arrow.names
        missing = [c for c in (id_field, text_field) if c not in names]
        if missing:
            raise ValueError(f"{url}: no column {', '.join(map(repr, missing))} (columns: {', '.join(names)}); "
                             "choose them with --id-field/--text-field")
        row = 0
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[id_field, text_field]):
            for raw_id, text in zip(batch.column(id_field).to_pylist(), batch.column(text_field).to_pylist()):
                row += 1
                yield _document(raw_id, text, f"{url}#row{row}", id_field, text_field, max_record)


def read_text(url: str, max_record: int = MAX_RECORD_BYTES) -> Iterator[Document | Reject]:
    """A plain UTF-8 text file (``.gz`` or not) as one document, ``text:<file name>`` without its
    suffixes; a file that is not UTF-8, has no text or is over ``max_record`` bytes (read no
    further) is a reject."""
    name = posixpath.basename(unquote(urlparse(url).path) if "://" in url else url.replace("\\", "/"))
    stem = re.sub(r"(\.txt)?(\.gz)?$", "", name, flags=re.IGNORECASE) or name
    with open_input(url) as stream:
        data = stream.read(max_record + 1)
    if len(data) > max_record:
        yield read_reject("record_too_large", url, _too_large(len(data), "the file"))
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        yield read_reject("invalid_utf8", url, f"not UTF-8: {err}")
        return
    yield _document(stem, text, url, "file name", "text", max_record)
