"""An input file's identity, recorded in its shard's completion marker, so a changed input is redone.

The identity is the file's size, its modification time and a blake2b hash of its whole content,
streamed (``bench/identity.py`` measures it against reading the file once).

When is an input changed (``change``)? The cheap check comes first:

* another size: changed (a truncated file repaired, a file replaced);
* same size and same mtime: unchanged, nothing is read (the assumption make and rsync make);
* same size, another mtime: the hash decides. A copy, a ``touch`` or a re-upload of the same bytes
  changes the mtime but not the content, and must not redo a shard that may have cost GPU hours;
  such a shard is skipped (and its content is hashed again on each later run).

Limit: an edit that keeps both size and mtime is not seen (``make`` and ``rsync`` do not see it
either). ``pyarrow.fs.FileInfo`` has no ETag, so object stores are compared like local files, by size
and LastModified (the mtime pyarrow reports), with the hash deciding when LastModified differs.
Markers written before whole-content hashes (``blake2b_head_tail``: the first and last MiB) are
compared by that hash.
"""

from __future__ import annotations

import hashlib

from pyarrow import fs as pafs

from bulkner.connectors.fs import filesystem, open_random_access

MIB = 1 << 20
HASH_CHUNK = 8 * MIB


def _stat(url: str) -> tuple[int, int | None]:
    """Size and mtime (ns; None where the file system has none) of a local path or URL."""
    fs, path = filesystem(url)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"input not found: {url!r}")
    return info.size, info.mtime_ns


def content_hash(url: str) -> str:
    """blake2b of an input's whole content, read in ``HASH_CHUNK`` pieces."""
    digest = hashlib.blake2b(digest_size=16)
    with open_random_access(url) as f:
        while piece := f.read(HASH_CHUNK):
            digest.update(piece)
    return digest.hexdigest()


def head_tail_hash(url: str, size: int) -> str:
    """blake2b of the first and last MiB of a ``size``-byte input (all of it up to 2 MiB): the
    hash markers recorded before ``content_hash``."""
    digest = hashlib.blake2b(digest_size=16)
    with open_random_access(url) as f:
        digest.update(f.read(MIB))
        if size > MIB:
            f.seek(max(MIB, size - MIB))
            digest.update(f.read(MIB))
    return digest.hexdigest()


def input_identity(url: str) -> dict:
    """The identity of an input as a JSON-able dict: ``size``, ``mtime_ns``, ``blake2b``."""
    size, mtime_ns = _stat(url)
    return {"size": size, "mtime_ns": mtime_ns, "blake2b": content_hash(url)}


def same_content(recorded: dict, url: str, size: int) -> bool:
    """Whether the ``size``-byte input ``url`` has the content ``recorded`` hashed (whole, or the
    first and last MiB for markers from before whole-content hashes)."""
    if "blake2b" in recorded:
        return content_hash(url) == recorded["blake2b"]
    return head_tail_hash(url, size) == recorded["blake2b_head_tail"]


def other_file(recorded: dict | None, url: str) -> bool:
    """Whether ``url``, found at another place than the input a marker records, is another file:
    another content than ``recorded`` (the same input moved or copied elsewhere, a mirror that
    moved, is the same file); a marker without an identity is trusted."""
    if not recorded:
        return False
    size, _ = _stat(url)
    return size != recorded["size"] or not same_content(recorded, url, size)


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
    if not same_content(recorded, url, size):
        return "same size, other content"
    return ""
