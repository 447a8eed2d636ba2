"""Tests of input opening (local, file://, fsspec fallback, gzip) and input expansion."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from bulkner.connectors.fs import expand_inputs, natural_key, open_input, shard_name


def _touch(path: Path, data: bytes = b"<x/>") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_open_local_plain_gz_and_file_url(tmp_path: Path) -> None:
    plain = _touch(tmp_path / "a.xml", b"<a>hello</a>")
    gz = _touch(tmp_path / "b.xml.gz", gzip.compress(b"<a>hello</a>" * 1000))
    with open_input(str(plain)) as f:
        assert f.read() == b"<a>hello</a>"
    with open_input(str(gz)) as f:
        assert f.read(12) == b"<a>hello</a>"
        assert len(f.read()) == 12 * 999
    with open_input(gz.as_uri()) as f:
        assert f.read(12) == b"<a>hello</a>"
    multi = _touch(tmp_path / "c.xml.gz", gzip.compress(b"<a>") + gzip.compress(b"</a>"))
    with open_input(str(multi)) as f:  # concatenated gzip members, as some tools write
        assert f.read() == b"<a></a>"


def test_open_errors_name_the_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.xml"):
        with open_input(str(tmp_path / "missing.xml")):
            pass
    with pytest.raises(FileNotFoundError, match="missing.xml.gz"):
        with open_input((tmp_path / "missing.xml.gz").as_uri()):
            pass
    with pytest.raises(ValueError, match="is a directory"):
        with open_input(str(tmp_path)):
            pass


def test_fsspec_fallback_for_schemes_pyarrow_lacks() -> None:
    fsspec = pytest.importorskip("fsspec")
    mem = fsspec.filesystem("memory")
    mem.pipe("/bulkner-test/in/pubmed26n0002.xml.gz", gzip.compress(b"<PubmedArticleSet/>"))
    mem.pipe("/bulkner-test/in/sub/pubmed26n0010.xml", b"<x/>")
    mem.pipe("/bulkner-test/in/pubmed26n0002.xml.gz.md5", b"0123")
    try:
        with open_input("memory://bulkner-test/in/pubmed26n0002.xml.gz") as f:
            assert f.read() == b"<PubmedArticleSet/>"
        with pytest.raises(FileNotFoundError, match="nope.xml"):
            with open_input("memory://bulkner-test/in/nope.xml"):
                pass
        assert expand_inputs(["memory://bulkner-test/in"], lambda u: not u.endswith(".md5")) == [
            "memory://bulkner-test/in/pubmed26n0002.xml.gz",
            "memory://bulkner-test/in/sub/pubmed26n0010.xml",
        ]
        assert expand_inputs(["memory://bulkner-test/in/**/*.xml"]) == [
            "memory://bulkner-test/in/sub/pubmed26n0010.xml"
        ]
    finally:
        mem.rm("/bulkner-test", recursive=True)


def test_expand_natural_order_dedup_filter_and_hidden_files(tmp_path: Path) -> None:
    for name in ["pubmed26n0010.xml.gz", "pubmed26n0009.xml.gz", "pubmed26n0009.xml.gz.md5", "README", ".DS_Store"]:
        _touch(tmp_path / "baseline" / name)
    _touch(tmp_path / "updatefiles" / "pubmed26n0011.xml.gz")
    _touch(tmp_path / "updatefiles" / "deep" / "x100.nxml")
    _touch(tmp_path / "updatefiles" / "deep" / "x20.txt")
    _touch(tmp_path / "updatefiles" / ".snapshot" / "pubmed26n0011.xml.gz")
    got = expand_inputs(
        [
            str(tmp_path / "updatefiles"),
            str(tmp_path / "baseline"),
            str(tmp_path / "baseline" / "*.xml.gz"),  # same files again
            (tmp_path / "baseline" / "pubmed26n0009.xml.gz").as_uri(),
        ],
        accept=lambda path: not path.endswith((".md5", "README")),
    )
    names = [Path(p).name for p in got]
    assert names == [
        "pubmed26n0009.xml.gz", "pubmed26n0010.xml.gz", "pubmed26n0011.xml.gz", "x20.txt", "x100.nxml"
    ]
    assert all(os.path.isabs(p) for p in got)


def test_expand_keeps_a_named_file_and_reports_empty_inputs(tmp_path: Path) -> None:
    odd = _touch(tmp_path / "notes.md")
    assert expand_inputs([str(odd)]) == [str(odd)]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"missing\.xml.*empty|empty.*missing\.xml") as err:
        expand_inputs([str(odd), str(tmp_path / "missing.xml"), str(empty)])
    assert "notes.md" not in str(err.value)
    with pytest.raises(ValueError, match=r"\*\.parquet"):
        expand_inputs([str(tmp_path / "*.parquet")])
    with pytest.raises(ValueError, match="empty"):  # a folder of files none of which is accepted
        _touch(empty / "README.md")
        expand_inputs([str(empty)], accept=lambda path: False)


def test_expand_shared_pubmed_in_file_number_order(shared_data: Path) -> None:
    got = expand_inputs([str(shared_data / "pubmed")])
    names = [shard_name(p) for p in got]
    assert len(got) == 17
    # baseline and update files interleave by year and file number, whatever their folder
    assert names[:7] == [
        "medline16n0902", "pubmed20n1015", "pubmed20n1016", "pubmed21n1062", "pubmed21n1063",
        "pubmed22n1114", "pubmed22n1115",
    ]
    assert names[11:13] == ["pubmed26n1334", "pubmed26n1335"]


def test_natural_key() -> None:
    names = ["pubmed26n0010", "pubmed26n0009", "pubmed25n1274", "pubmed26n100"]
    expected = ["pubmed25n1274", "pubmed26n0009", "pubmed26n0010", "pubmed26n100"]
    assert sorted(names, key=natural_key) == expected


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("s3://bucket/updatefiles/pubmed26n1335.xml.gz", "pubmed26n1335"),
        ("/data/pubmed26n1335.xml", "pubmed26n1335"),
        ("gs://b/oa/PMC3166277.nxml.gz", "PMC3166277"),
        ("file:///tmp/my%20file.xml", "my_file"),
        ("rel/dir/abstracts.jsonl", "abstracts"),
        ("oa_comm_xml.PMC000xxxxxx.baseline.2026-06-18.tar.gz", "oa_comm_xml.PMC000xxxxxx.baseline.2026-06-18"),
        ("pkg.tgz", "pkg"),
        ("corpus.parquet", "corpus"),
        ("weird name (1).xml.gz", "weird_name_1"),
    ],
)
def test_shard_name(url: str, name: str) -> None:
    assert shard_name(url) == name


def test_shard_name_rejects_empty() -> None:
    with pytest.raises(ValueError, match="shard name"):
        shard_name("s3://bucket/.xml.gz")
