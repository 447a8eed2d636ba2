"""An input's identity: size, mtime and a hash of its whole content decide whether it changed."""

from __future__ import annotations

import os

import pytest

from bulkner.connectors.identity import MIB, change, head_tail_hash, input_identity, other_file


@pytest.fixture
def big(tmp_path):
    path = tmp_path / "big.xml"
    path.write_bytes(bytes(range(256)) * (3 * MIB // 256))  # 3 MiB: head, middle and tail
    return path


def rewrite(path, offset: int, byte: bytes) -> None:
    data = bytearray(path.read_bytes())
    data[offset : offset + 1] = byte
    path.write_bytes(bytes(data))
    os.utime(path, ns=(1, 1))  # always another mtime than the recorded one


@pytest.mark.parametrize("where", ["head", "middle", "tail"])
def test_same_size_edits_anywhere_are_seen(big, where):
    recorded = input_identity(str(big))
    rewrite(big, {"head": 10, "middle": int(1.5 * MIB), "tail": 3 * MIB - 1}[where], b"!")
    assert change(recorded, str(big)) == "same size, other content"


def test_markers_with_head_and_tail_hashes_are_still_read(big):
    recorded = input_identity(str(big))
    legacy = {"size": recorded["size"], "mtime_ns": 0, "blake2b_head_tail": head_tail_hash(str(big), 3 * MIB)}
    assert change(legacy, str(big)) == ""
    rewrite(big, 10, b"!")
    assert change(legacy, str(big)) == "same size, other content"


def test_another_file_is_another_content(big, tmp_path):
    recorded = input_identity(str(big))
    copy = tmp_path / "elsewhere.xml"
    copy.write_bytes(big.read_bytes())
    assert not other_file(recorded, str(big))
    assert not other_file(recorded, str(copy))  # moved or copied: the same input
    rewrite(copy, 10, b"!")
    assert other_file(recorded, str(copy))
    assert not other_file(None, str(copy))  # a marker without an identity is trusted


def test_size_and_mtime_are_checked_first(big):
    recorded = input_identity(str(big))
    assert recorded["size"] == 3 * MIB and recorded["mtime_ns"] == big.stat().st_mtime_ns
    assert change(recorded, str(big)) == ""
    assert change(recorded | {"blake2b": "stale"}, str(big)) == ""  # same size and mtime: not read
    with big.open("ab") as f:
        f.write(b"more")
    assert change(recorded, str(big)) == f"size {3 * MIB} -> {3 * MIB + 4} bytes"
    assert change(None, str(big)) == ""  # a marker from before identities were recorded


def test_small_files_are_hashed_whole(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * (MIB + 10))
    b.write_bytes(b"x" * MIB + b"y" + b"x" * 9)
    assert head_tail_hash(str(a), MIB + 10) != head_tail_hash(str(b), MIB + 10)
