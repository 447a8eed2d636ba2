"""Abbreviation definitions (Schwartz & Hearst) and one type per short form, on real abstracts.

The sample abstract of the issue (PMID 28786991: latent TB infection, TTT, FBP) ships with the
package; the gold-corpus tests read ``../shared/data/ner`` and skip where it is absent.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from bulkner.connectors.pubmed import read_pubmed
from bulkner.corpora import GoldDocument
from bulkner.corpora.gold import sentence_gold
from bulkner.corpora.registry import read_corpus
from bulkner.linking.abbreviations import Abbreviation, document_abbreviations, find_abbreviations, harmonize
from bulkner.pipeline.tagger import segment
from bulkner.schema import Document, Entity, Sentence

REPO = Path(__file__).resolve().parents[2]
NER = REPO.parent / "shared" / "data" / "ner"
BC5CDR = NER / "bc5cdr" / "CDR_TrainingSet.PubTator.txt"
BIORED = NER / "biored" / "Train.filtered.PubTator"

# (sentence, [(short form, long form)]); real PubMed sentences except where a case needs a construction.
DEFINITIONS = [
    ("We excluded studies that examined steps only after diagnosis of latent TB infection (LTBI).",
     [("LTBI", "latent TB infection")]),
    ("Of 40 adults, those with latent TB infection (LTBI, n = 20) were treated.", [("LTBI", "latent TB infection")]),
    ("A selective antagonist of mGluR5, 2-methyl-6-(phenylethynyl)pyridine (MPEP; 5 mg/kg ip), when administered",
     [("MPEP", "2-methyl-6-(phenylethynyl)pyridine")]),
    # initials first: plain Schwartz & Hearst stops at "treatment" for TTT
    (("To synthesize outputs and outcomes of community-based tuberculosis targeted testing and treatment (TTT) "
      "programs in foreign-born populations (FBP) in the United States (US)."),
     [("TTT", "targeted testing and treatment"), ("FBP", "foreign-born populations"), ("US", "United States")]),
    # nested: the long form stays inside the bracket around its definition
    ("Patients with leukaemia (acute myeloid leukemia (AML) or acute lymphoblastic leukemia (ALL)) were included.",
     [("AML", "acute myeloid leukemia"), ("ALL", "acute lymphoblastic leukemia")]),
    # brackets inside long forms
    ("(R)-alpha-methylhistamine (RAMH) (5 microg i.c.v.) and thioperamide (THP) (15 mg/kg i.p.), p",
     [("RAMH", "(R)-alpha-methylhistamine"), ("THP", "thioperamide")]),
    (("In contrast, the protein abundances of Na(+)/H(+) exchanger type 3 (NHE3), Na(+)-K(+)-2Cl(-) cotransporter "
      "(BSC-1), and thiazide-sensitive Na(+)-Cl(-) cotransporter (TSC) were decreased."),
     [("NHE3", "Na(+)/H(+) exchanger type 3"), ("TSC", "thiazide-sensitive Na(+)-Cl(-) cotransporter")]),
    # Unicode
    (("Levels of tumour necrosis factor-α (TNF-α) were high in β-thalassemia major (β-TM) and "
      "[18F]fluorodeoxyglucose (FDG) uptake rose."),
     [("TNF-α", "tumour necrosis factor-α"), ("β-TM", "β-thalassemia major"), ("FDG", "[18F]fluorodeoxyglucose")]),
    # SF (long form)
    ("A homozygous deletion of the DOCK8 (dedicator of cytokinesis 8) locus at chromosome 9p24 was found.",
     [("DOCK8", "dedicator of cytokinesis 8")]),
    # no definitions: statistics, counts, asides inside the would-be long form, a short form inside its long form
    (("Of 100 hypothetical participants (predominantly FBP) reached by community-based TTT, 40.4 (95% CI 28.6 to "
      "50.1) would have valid test results, (n = 20), (P < 0.05)."), []),
    (("A few minutes after administration of the drugs, they presented urticaria (patients 1 and 2) and "
      "conjunctivitis (patient 1)."), []),
    (("Raloxifene did not increase risk for gallbladder disease (RR 1.0; 95% CI 0.7-1.3), endometrial hyperplasia "
      "(RR 1.3; 95% CI 0.4-5.1)."), []),
    ("gum Arabic (2 mL/kg of a 10% w/v aqueous suspension of gum Arabic powder, 10 days)", []),
]

# doc -> {short form: (passage, short start, short end, long start, long end)}. Counted by hand: Sch, HP; the
# gold marks the same offsets for Sch, ESRD, CRF and DOX. No definition: "uninephrectomy (NX)", "(OLTX)" (no X).
ABSTRACTS = {
    "pmid:435349": {"Sch": (1, 24, 27, 0, 22)},  # "Suxamethonium chloride (Sch) was administered"
    "pmid:1378968": {  # "Rats with lithium-induced nephropathy were subjected to high protein (HP) feeding"
        "HP": (1, 70, 72, 56, 68), "GFR": (1, 589, 592, 561, 587)},  # "glomerular filtration rate (GFR)"
    "pmid:11773892": {  # the title defines ESRD before the abstract does again
        "ESRD": (0, 25, 29, 0, 23), "CRF": (1, 414, 417, 391, 412)},  # "chronic renal failure (CRF)"
    "pmid:11054569": {  # "multidrug resistant (MDR)", "methylation sensitive-representational difference analysis"
        "MDR": (1, 139, 142, 118, 137), "MS-RDA": (1, 247, 253, 187, 245), "DOX": (1, 545, 548, 532, 543)},
}
LTBI_MENTIONS = ("2/2", "3/2", "3/3", "3/4", "4/0", "4/1")
"""Where "LTBI" occurs in the sample abstract (passage/sentence): defined in 2/2, used in the others."""


def _corpus(path: Path) -> list[GoldDocument]:
    if not path.exists():
        pytest.skip(f"shared gold corpus not found: {path}")
    return list(read_corpus("pubtator", path).documents)


def _sentences(document: Document) -> list[Sentence]:
    sentences, rejects = segment([document], max_chars=100_000)
    assert not rejects
    return sentences


def _gold_entities(gold: GoldDocument, sentences: list[Sentence]) -> list[Entity]:
    return sentence_gold(sentences, [gold], crossing="none").entities(sentences)


def _where(e: Entity) -> str:
    """``passage/sentence`` of an entity."""
    return f"{e.sentence.passage_index}/{e.sentence.sentence_index}"


@pytest.mark.parametrize("text, expected", DEFINITIONS)
def test_definitions_in_real_sentences(text, expected):
    found = find_abbreviations(text)
    assert [(text[a.short_start : a.short_end], text[a.long_start : a.long_end]) for a in found] == expected


@pytest.mark.parametrize("path", [BC5CDR, BIORED], ids=["bc5cdr", "biored"])
def test_definitions_with_exact_offsets_in_real_abstracts(path):
    documents = [g for g in _corpus(path) if g.document.doc_id in ABSTRACTS]
    assert len(documents) >= 2
    for gold in documents:
        found = document_abbreviations(_sentences(gold.document))
        assert {short: (s.passage_index, *a) for short, (s, a) in found.items()} == ABSTRACTS[gold.document.doc_id]


def test_offsets_are_passage_offsets():
    sentence = Sentence("t:1", 1, 1, 3, 100, 151, "Patients with latent TB infection (LTBI) were seen.")
    ((found_in, a),) = document_abbreviations([sentence]).values()
    assert found_in is sentence and a == Abbreviation(135, 139, 114, 133)


def test_detection_precision_on_bc5cdr_where_gold_marks_both_forms():
    """Of the detected pairs whose long form is a gold mention, how many have a short form of the same gold
    type; and of those whose short form is one, how many have a long form of that type (its boundaries)."""
    counts = Counter()
    for gold in _corpus(BC5CDR):
        types = {(index, span.start, span.end): span.type for index, span in gold.mentions}
        for s in _sentences(gold.document):
            for a in find_abbreviations(s.text):
                long = types.get((s.passage_index, a.long_start + s.start, a.long_end + s.start))
                short = types.get((s.passage_index, a.short_start + s.start, a.short_end + s.start))
                counts.update(pairs=1, long_gold=long is not None, short_gold=short is not None,
                              agree=long is not None and long == short)
    short_precision, long_precision = counts["agree"] / counts["long_gold"], counts["agree"] / counts["short_gold"]
    print(f"BC5CDR train: {dict(counts)}; short form given gold long form {short_precision:.3f}, "
          f"long form given gold short form {long_precision:.3f}")
    assert counts["long_gold"] > 150
    assert short_precision > 0.95 and long_precision > 0.85


@pytest.fixture(scope="module")
def ltbi() -> list[Sentence]:
    """The issue's abstract: latent TB infection (LTBI), TTT and FBP, from the packaged sample."""
    sample = REPO / "bulkner" / "data" / "sample-pubmed.xml.gz"
    document = next(d for d in read_pubmed(str(sample)) if getattr(d, "doc_id", None) == "pmid:28786991")
    return _sentences(document)


def _at(sentences: list[Sentence], where: str, phrase: str, type: str, score: float = 0.97) -> Entity:
    """An entity on the first ``phrase`` of the sentence at ``where`` (``passage/sentence``)."""
    s = next(s for s in sentences if f"{s.passage_index}/{s.sentence_index}" == where)
    start = s.start + s.text.index(phrase)
    return Entity(s, start, start + len(phrase), type, score)


def test_ltbi_takes_its_long_forms_type_everywhere_and_ttt_fbp_are_dropped(ltbi):
    """What the README's first run showed: LTBI defined as a Disease, tagged Chemical elsewhere; TTT and FBP, a
    testing programme and a population, tagged too."""
    entities = [
        _at(ltbi, "0/0", "tuberculosis", "Disease"),
        _at(ltbi, "1/0", "tuberculosis", "Disease"),
        _at(ltbi, "1/0", "TTT", "Disease"),
        _at(ltbi, "1/0", "FBP", "Chemical"),
        _at(ltbi, "2/2", "FBP", "Chemical"),
        _at(ltbi, "2/2", "latent TB infection", "Disease", 0.98),
        _at(ltbi, "3/2", "TTT", "Disease"),
        _at(ltbi, "3/2", "LTBI", "Chemical", 0.96),
        _at(ltbi, "3/4", "LTBI", "Chemical", 0.97),
        _at(ltbi, "4/1", "LTBI", "Chemical", 0.98),
    ]
    out, stats = harmonize(ltbi, entities)
    kept = {("0/0", "tuberculosis", "Disease"), ("1/0", "tuberculosis", "Disease"),
            ("2/2", "latent TB infection", "Disease")}
    assert {(_where(e), e.text, e.type) for e in out} == kept | {(w, "LTBI", "Disease") for w in LTBI_MENTIONS}
    assert [e.score for e in out if e.text == "LTBI"] == [0.98, 0.96, 0.98, 0.97, 0.98, 0.98]  # added: the LF's
    assert stats == Counter(definitions=5, retyped=3, added=3, dropped=4)  # definitions: TTT, FBP, US, LTBI, CI


def test_counts_add_up_and_output_is_ordered_and_unique(ltbi):
    entities = [
        _at(ltbi, "2/2", "latent TB infection", "Disease"),
        _at(ltbi, "3/4", "LTBI", "Chemical"),
        _at(ltbi, "3/4", "LTBI", "Disease"),  # the same span twice, two types: one Disease stays
        _at(ltbi, "3/4", "LTBI", "Disease"),  # an exact duplicate
        _at(ltbi, "3/2", "LTBI treatment", "Chemical"),  # a longer name holding the mention: kept, nothing added
        _at(ltbi, "4/1", "BI diagnosis", "Chemical"),  # overlaps the mention without holding it: replaced
        _at(ltbi, "0/0", "review", "Disease"),
    ]
    out, stats = harmonize(ltbi, entities)
    assert len(out) == len(entities) - stats["dropped"] + stats["added"]
    assert out == sorted(out, key=lambda e: (e.sentence.passage_index, e.start, e.end, e.type))
    assert len({(e.sentence.key, e.start, e.end, e.type) for e in out}) == len(out)
    spans = {(_where(e), e.text, e.type) for e in out}
    assert ("3/2", "LTBI treatment", "Chemical") in spans and ("3/2", "LTBI", "Disease") not in spans
    assert ("4/1", "BI diagnosis", "Chemical") not in spans and ("4/1", "LTBI", "Disease") in spans
    assert [t for w, text, t in spans if (w, text) == ("3/4", "LTBI")] == ["Disease"]
    assert ("0/0", "review", "Disease") in spans


def test_one_document_at_a_time(ltbi):
    other = Sentence("pmid:1", 1, 0, 0, 0, 10, "Other text")
    with pytest.raises(ValueError, match="one document"):
        harmonize(ltbi, [Entity(other, 0, 5, "Disease")])


@pytest.mark.parametrize("long_form, expected", [
    ("latent TB infection", dict.fromkeys(LTBI_MENTIONS, "Disease")),
    ("TB infection", {"3/2": "Disease"}),  # retyped only: weaker evidence adds nothing
    ("TB", {"3/2": "Chemical"}),  # an entity on part of the long form: no verdict
    (None, {}),  # no entity touches the long form: the short form is dropped
], ids=["exact", "near", "partial", "none"])
def test_what_the_long_form_entity_decides(ltbi, long_form, expected):
    entities = [_at(ltbi, "3/2", "LTBI", "Chemical")] + ([_at(ltbi, "2/2", long_form, "Disease")] if long_form else [])
    out, _ = harmonize(ltbi, entities)
    assert {_where(e): e.type for e in out if e.text == "LTBI"} == expected


def test_a_title_mention_before_the_definition_is_restored_from_real_gold():
    """BC5CDR PMID 18221780: the title says NMDA, the abstract defines N-methyl-D-aspartate (NMDA). With every
    NMDA left out of the gold, harmonize puts each back as a Chemical (the title's too), and nothing else changes."""
    gold = next(g for g in _corpus(BC5CDR) if g.document.doc_id == "pmid:18221780")
    sentences = _sentences(gold.document)
    entities = _gold_entities(gold, sentences)
    nmda = [e for e in entities if e.text == "NMDA"]
    assert nmda[0].sentence.passage_index == 0 and len(nmda) == 4
    out, stats = harmonize(sentences, [e for e in entities if e not in nmda])
    restored = {replace(e, origin="abbreviation") if e in nmda else e for e in entities}
    assert set(out) == restored and stats["added"] == 4 and stats["dropped"] == stats["retyped"] == 0


def test_gold_bc5cdr_is_nearly_a_fixed_point():
    """On gold entities every change is a disagreement with the annotators: few on BC5CDR (the gold check script
    reports all three corpora)."""
    totals = Counter()
    for gold in _corpus(BC5CDR)[:200]:
        sentences = _sentences(gold.document)
        entities = _gold_entities(gold, sentences)
        totals.update(harmonize(sentences, entities)[1])
        totals["entities"] += len(entities)
    assert totals["definitions"] > 150
    assert totals["retyped"] + totals["added"] + totals["dropped"] <= 0.002 * totals["entities"]
