"""An input file's identity, recorded in its shard's completion marker, so a changed input is redone.

The identity is the file's size, its modification time and a blake2b hash of its first and last
MiB (the whole file when it is at most 2 MiB), read with two ranged reads, never the whole file.

When is an input changed (``change``)? The cheap check comes first:

* another size: changed (a truncated file repaired, a file replaced);
* same size and same mtime: unchanged, nothing is read (the assumption make and rsync make);
* same size, another mtime: the hash decides. A copy, a ``touch`` or a re-upload of the same bytes
  changes the mtime but not the content, and must not redo a shard that may have cost GPU hours;
  such a shard is skipped (and its two MiB are read again on each later run).

Limits: an edit that keeps the size and touches only the middle of a file larger than 2 MiB is not
seen when the mtime changes too (for ``.gz`` inputs any edit reaches the last MiB: gzip ends with a
CRC of the whole content), nor is an edit that keeps both size and mtime. ``pyarrow.fs.FileInfo``
has no ETag, so object stores are compared like local files, by size and LastModified (the mtime
pyarrow reports), with the hash deciding when LastModified differs.
"""

from __future__ import annotations

import hashlib

from pyarrow import fs as pafs

from bulkner.connectors.fs import filesystem, open_random_access

MIB = 1 << 20


def _stat(url: str) -> tuple[int, int | None]:
    """Size and mtime (ns; None where the file system has none) of a local path or URL."""
    fs, path = filesystem(url)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"input not found: {url!r}")
    return info.size, info.mtime_ns


def head_tail_hash(url: str, size: int) -> str:
    """blake2b of the first and last MiB of a ``size``-byte input (all of it up to 2 MiB)."""
    digest = hashlib.blake2b(digest_size=16)
    with open_random_access(url) as f:
        digest.update(f.read(MIB))
        if size > MIB:
            f.seek(max(MIB, size - MIB))
            digest.update(f.read(MIB))
    return digest.hexdigest()


def input_identity(url: str) -> dict:
    """The identity of an input as a JSON-able dict: ``size``, ``mtime_ns``, ``blake2b_head_tail``."""
    size, mtime_ns = _stat(url)
    return {"size": size, "mtime_ns": mtime_ns, "blake2b_head_tail": head_tail_hash(url, size)}


def change(recorded: dict | None, url: str) -> str:
    """Why ``url`` is not the input ``recorded`` describes, or ``""`` when it is the same one.

    A marker without an identity (written before identities were recorded) is trusted.
    """
    if not recorded:
        return ""
    size, mtime_ns = _stat(url)
    if size != recorded["size"]:
        return f"size {recorded['size']} -> {size} bytes"
    if mtime_ns is not None and mtime_ns == recorded["mtime_ns"]:
        return ""
    if head_tail_hash(url, size) != recorded["blake2b_head_tail"]:
        return "same size, other content"
    return ""
