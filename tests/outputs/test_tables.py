"""Reading output tables sees finished shards only, on local paths and object-store URLs."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

import bulkner
from bulkner.schema import TABLES, Document, Passage
from bulkner.outputs.writer import OutputDir, documents_table
from tests.outputs.shards import write_tables


def write(out: OutputDir, shard: str, pmids: list[int], marker: bool = True) -> None:
    docs = [Document(f"pmid:{p}", 1, (Passage("title", f"Title {p}."),)) for p in pmids]
    write_tables(out, shard, {"documents": documents_table(docs, shard)}, {"documents": len(docs)})
    if not marker:
        out.undo(shard)  # a crash between its tables and its marker


@pytest.fixture
def out(tmp_path):
    out = OutputDir(str(tmp_path / "out"))
    write(out, "n10", [3, 4])
    write(out, "n9", [1, 2])
    write(out, "n11", [5], marker=False)
    return str(tmp_path / "out")


def test_only_finished_shards_are_read(out):
    assert bulkner.finished_files(out, "documents") == [f"{out}/documents/n9.parquet", f"{out}/documents/n10.parquet"]
    table = bulkner.read_table(out, "documents")
    assert table.schema.equals(TABLES["documents"])
    assert table.column("doc_id").to_pylist() == ["pmid:1", "pmid:2", "pmid:3", "pmid:4"]
    assert pq.read_table(f"{out}/documents/n11.parquet").num_rows == 1  # there, but not finished


def test_columns_and_tables_a_run_did_not_write(out):
    assert bulkner.read_table(out, "documents", columns=["doc_id"]).column_names == ["doc_id"]
    entities = bulkner.read_table(out, "entities")  # a split writes no entities
    assert entities.num_rows == 0 and entities.schema.equals(TABLES["entities"])
    assert bulkner.finished_files(out, "entities") == []


def test_columns_added_since_a_shard_was_written_read_as_nulls(tmp_path):
    """An entities table written before ``origin``, ``concept_id`` and ``link_score`` existed: the
    shard reader (export, report) and read_table give nulls there."""
    from bulkner.outputs.tables import read_shard
    from bulkner.outputs.writer import entities_table
    from bulkner.pipeline.tagger import segment
    from bulkner.schema import Entity

    out = OutputDir(str(tmp_path / "out"))
    doc = Document("pmid:1", 1, (Passage("title", "Aspirin helps."),))
    sentences, _ = segment([doc], 2000)
    new = entities_table([Entity(sentences[0], 0, 7, "Chemical", concept_id="MESH:D001241")], "old")
    old = new.drop_columns(["origin", "concept_id", "link_score"])
    write_tables(out, "old", {"documents": documents_table([doc], "old"), "entities": old}, {"documents": 1})
    row = read_shard(out, "entities", "old").to_pylist()[0]
    assert row["text"] == "Aspirin" and row["origin"] is row["concept_id"] is row["link_score"] is None
    assert read_shard(out, "entities", "old", ["concept_id", "type"]).column_names == ["concept_id", "type"]
    assert bulkner.read_table(str(tmp_path / "out"), "entities").column("concept_id").to_pylist() == [None]


def test_bad_names_are_refused(out, tmp_path):
    with pytest.raises(ValueError, match="no table 'entity'; the tables are documents"):
        bulkner.read_table(out, "entity")
    with pytest.raises(FileNotFoundError, match="no output directory"):
        bulkner.read_table(str(tmp_path / "nowhere"), "documents")
    assert not (tmp_path / "nowhere").exists()


def test_object_store_urls(tmp_path):
    pytest.importorskip("fsspec")
    url = f"memory://{tmp_path.name}/out"
    out = OutputDir(url)
    write(out, "a", [1])
    write(out, "b", [2], marker=False)
    assert bulkner.finished_files(url, "documents") == [f"{url}/documents/a.parquet"]
    assert bulkner.read_table(url, "documents").column("doc_id").to_pylist() == ["pmid:1"]
