"""Opening and listing inputs: local paths and object-store URLs.

Local paths (and ``file://`` URLs) are opened directly; URLs with a scheme that
``pyarrow.fs.FileSystem.from_uri`` understands (``s3://``, ``gs://``, ``hdfs://`` ...) go
through pyarrow; any other scheme falls back to fsspec when it is installed. Names ending in
``.gz`` are decompressed on the fly (streamed, never read whole into memory).
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import io
import logging
import os
import posixpath
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from pyarrow import fs as pafs
from pyarrow.lib import ArrowInvalid

logger = logging.getLogger(__name__)

ACCEPT_THREADS = 16
"""Files checked at once by ``expand_inputs``'s ``accept``."""
_GLOB_CHARS = re.compile(r"[*?\[]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DIGITS = re.compile(r"(\d+)")


def _scheme(url: str) -> str:
    """The URL scheme, or ``""`` for a local path (a one-letter scheme is a Windows drive)."""
    scheme = urlparse(url).scheme
    return "" if len(scheme) <= 1 else scheme.lower()


def local_path(url: str) -> str | None:
    """The local file-system path of ``url``, or None when it names a remote object."""
    scheme = _scheme(url)
    if scheme == "":
        return url
    if scheme == "file":
        return unquote(urlparse(url).path)
    return None


def location(url: str) -> str:
    """Where ``url`` is, one spelling per file: a local path made absolute with its links resolved,
    a remote URL as given."""
    path = local_path(url)
    return os.path.realpath(path) if path is not None else url


def inside(url: str, folder: str) -> bool:
    """Whether ``url`` lies in ``folder`` or below it (by ``location``)."""
    return location(url).startswith(location(folder).rstrip("/") + "/")


def remote_fs(url: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow file system and path for a remote URL (fsspec wrapped when pyarrow lacks it)."""
    try:
        return pafs.FileSystem.from_uri(url)
    except ArrowInvalid:
        pass
    try:
        import fsspec
    except ImportError as exc:
        raise ValueError(
            f"input {url!r}: pyarrow does not know this URL scheme and fsspec is not installed "
            "(pip install fsspec)"
        ) from exc
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ValueError, ImportError) as exc:
        raise ValueError(f"input {url!r}: no file system for this URL: {exc}") from exc
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def _open_raw(url: str, stack: contextlib.ExitStack, random_access: bool) -> BinaryIO:
    """The input's bytes as they are stored (a seekable file when ``random_access``)."""
    local = local_path(url)
    if local is not None:
        if os.path.isdir(local):
            raise ValueError(f"input {url!r} is a directory; expand it with expand_inputs()")
        if not os.path.isfile(local):
            raise FileNotFoundError(f"input not found: {url!r}")
        return stack.enter_context(open(local, "rb"))
    fs, path = remote_fs(url)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input not found: {url!r}")
    if kind == pafs.FileType.Directory:
        raise ValueError(f"input {url!r} is a directory; expand it with expand_inputs()")
    if random_access:
        return stack.enter_context(fs.open_input_file(path))
    return stack.enter_context(fs.open_input_stream(path, compression=None))


def filesystem(url: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow file system and path for a local path or a URL (any scheme inputs take)."""
    local = local_path(url)
    return (pafs.LocalFileSystem(), local) if local is not None else remote_fs(url)


@contextlib.contextmanager
def open_input(url: str) -> Iterator[BinaryIO]:
    """Open a local path or URL for binary reading; ``.gz`` names are gunzipped while streaming.

    Raises ``FileNotFoundError`` when the input does not exist and ``ValueError`` when it is a
    directory or its URL scheme cannot be handled; both messages name the input.
    """
    with contextlib.ExitStack() as stack:
        raw = _open_raw(url, stack, random_access=False)
        if (local_path(url) or urlparse(url).path).lower().endswith(".gz"):
            raw = stack.enter_context(io.BufferedReader(GunzipStream(raw), buffer_size=1 << 16))
        logger.debug("opened %s", url)
        yield raw


@contextlib.contextmanager
def open_random_access(url: str) -> Iterator[BinaryIO]:
    """Open a local path or URL as a seekable file (for formats read from the end, like Parquet);
    errors as ``open_input``."""
    with contextlib.ExitStack() as stack:
        yield _open_raw(url, stack, random_access=True)


class GunzipStream(io.RawIOBase):
    """Streaming gzip decompression (multi-member). A truncated file reads as ending at the cut (with
    a warning), so no record completed before the cut is lost; corrupt data raises BadGzipFile."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.inflater = zlib.decompressobj(wbits=31)
        self.pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.pending:
            chunk = self.inflater.unused_data or self.raw.read(1 << 16)
            if self.inflater.eof:  # next gzip member, or the end of the file
                if not chunk:
                    return 0
                self.inflater = zlib.decompressobj(wbits=31)
            elif not chunk:
                # End the stream here instead of raising: a parser reading it delivers every record
                # completed before the cut, then reports the unterminated document itself.
                logger.warning("truncated gzip input: it ends before its end-of-stream marker")
                return 0
            try:
                self.pending = self.inflater.decompress(chunk)
            except zlib.error as err:
                raise gzip.BadGzipFile(f"corrupt gzip data: {err}") from err
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


def natural_key(name: str) -> tuple[str | int, ...]:
    """Sort key that orders digit runs by value: ``n0009`` < ``n0010`` < ``n100``."""
    return tuple(int(part) if i % 2 else part for i, part in enumerate(_DIGITS.split(name)))


def is_hidden(path: str) -> bool:
    """Whether a file's name starts with a dot (``.DS_Store``, an editor's ``.#x.xml``)."""
    return posixpath.basename(path.replace(os.sep, "/")).startswith(".")


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a ``/``-separated glob (``*``, ``**``, ``?``, ``[...]``) into a regex."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 2 if pattern[i + 1 : i + 2] == "]" else i + 1)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _expand_local(path: str) -> tuple[list[str], bool]:
    """Files a local path, directory or glob stands for (absolute paths), and whether it was
    expanded (a directory or glob) rather than a file named directly."""
    if _GLOB_CHARS.search(path):
        return [os.path.abspath(p) for p in glob.glob(path, recursive=True) if os.path.isfile(p)], True
    if os.path.isdir(path):
        found = []
        for root, dirs, names in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]  # no .git, .snapshots ...
            found += [os.path.abspath(os.path.join(root, name)) for name in names]
        return found, True
    return ([os.path.abspath(path)] if os.path.isfile(path) else []), False


def _expand_remote(url: str) -> tuple[list[str], bool]:
    """Files a remote URL, directory or glob stands for (as URLs with the input's prefix), and
    whether it was expanded."""
    prefix = url[: url.index("://") + 3]
    rest = url[len(prefix) :]
    match = _GLOB_CHARS.search(rest)
    base = rest if match is None else rest[: rest.rfind("/", 0, match.start()) + 1]
    fs, path = remote_fs(prefix + base)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return ([url] if match is None else []), match is not None
    if info.type != pafs.FileType.Directory:
        return [], True
    selector = pafs.FileSelector(path, recursive=True)
    tails = [posixpath.relpath(i.path, path) for i in fs.get_file_info(selector) if i.type == pafs.FileType.File]
    # Map the file system's paths back onto the URL: they share the tail after `path`.
    urls = [prefix + base.rstrip("/") + "/" + tail for tail in tails if not tail.startswith(".") and "/." not in tail]
    if match is not None:
        regex = _glob_regex(rest)
        urls = [u for u in urls if regex.match(u[len(prefix) :])]
    return urls, True


def expand_inputs(inputs: Sequence[str], accept: Callable[[str], bool] | None = None) -> list[str]:
    """Expand paths, directories (recursively) and globs into a sorted, de-duplicated file list.

    Files found by expanding a directory or glob are kept when ``accept(path)`` says so (all when
    it is None) and they are not hidden (a name or folder starting with a dot); a file named
    directly is kept whatever its name. Local inputs come back as absolute paths. The list is
    sorted in natural order of the file name first, then of the full path, so PubMed baseline and
    update files come in file-number order whatever folder they sit in (updates apply in that
    order). Raises ``ValueError`` naming every input that matches no file.
    """
    found: dict[str, None] = {}
    empty: list[str] = []
    for item in inputs:
        local = local_path(item)
        files, expanded = _expand_local(local) if local is not None else _expand_remote(item)
        if expanded:
            files = [f for f in files if not is_hidden(f)]
            if accept is not None:  # in threads: accept may open each file (object stores: tens of ms each)
                with ThreadPoolExecutor(ACCEPT_THREADS) as pool:
                    files = [f for f, ok in zip(files, pool.map(accept, files)) if ok]
        if not files:
            empty.append(item)
        found.update(dict.fromkeys(files))
    if empty:
        raise ValueError(f"no input files match: {', '.join(map(repr, empty))}")
    return sorted(found, key=lambda p: (natural_key(posixpath.basename(p)), natural_key(p)))


_FORMAT_SUFFIXES = (".tgz", ".tar", ".nxml", ".xml", ".jsonl", ".ndjson", ".parquet", ".txt")


def shard_name(url: str) -> str:
    """Name of a shard for its output files: the base name without ``.gz`` and its format suffix
    (``.xml``, ``.nxml``, ``.tar``, ``.tgz``, ``.jsonl``, ``.ndjson``, ``.parquet``, ``.txt``).

    ``s3://b/pubmed26n1335.xml.gz`` → ``pubmed26n1335``. Characters other than letters, digits,
    ``.``, ``_`` and ``-`` become ``_``. Raises ``ValueError`` when nothing usable is left.
    """
    path = unquote(urlparse(url).path) if _scheme(url) else url.replace(os.sep, "/")
    base = posixpath.basename(path)
    if base.lower().endswith(".gz"):
        base = base[:-3]
    for suffix in _FORMAT_SUFFIXES:
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
            break
    name = _UNSAFE.sub("_", base).strip("_")
    if not name or name.startswith("."):
        raise ValueError(f"input {url!r} gives no usable shard name ({name!r})")
    return name
