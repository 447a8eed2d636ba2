"""VANER's lexicon and dense samples: built from the concept ids of real PubTator corpora, versioned,
and turned into training samples whose answers tag exactly the names of the source's types."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bulkner.training.lexicon import VERSION, build_lexicon, dense_samples, pubtator_concepts, read_lexicon, write_lexicon
from bulkner.tagging import parse, render

NER = Path(__file__).resolve().parents[3] / "shared" / "data" / "ner"
NCBI_TRAIN = NER / "ncbi_disease" / "NCBItrainset_corpus.txt"
CDR_TRAIN = NER / "bc5cdr" / "CDR_TrainingSet.PubTator.txt"
SHIPPED = Path(__file__).resolve().parents[2] / "bulkner" / "data" / "lexicon-v1.json"

PUBTATOR = """\
1|t|Naloxone reverses clonidine-induced hypotension.
1|a|Breast and ovarian cancer were seen.
1\t0\t8\tNaloxone\tChemical\tD009270
1\t18\t27\tclonidine\tChemical\tD003000
1\t36\t47\thypotension\tDisease\tD007022
1\t49\t74\tBreast and ovarian cancer\tCompositeMention\tD001943|D010051
1\t60\t67\tovarian\tModifier\t-1

"""


def test_concepts_keep_every_surface_form_and_split_composite_ids(tmp_path):
    path = tmp_path / "mini.txt"
    path.write_text(PUBTATOR, encoding="utf-8")
    concepts = pubtator_concepts(path)
    assert concepts["Chemical"] == {"D009270": {"Naloxone"}, "D003000": {"clonidine"}}
    assert concepts["Disease"]["D001943"] == concepts["Disease"]["D010051"] == {"Breast and ovarian cancer"}
    assert "ovarian" not in {n for names in concepts["Disease"].values() for n in names}  # no concept id: skipped


def test_shipped_lexicon_is_the_one_the_training_sets_build(tmp_path):
    if not (NCBI_TRAIN.exists() and CDR_TRAIN.exists()):
        pytest.skip("shared data missing")
    built = build_lexicon([CDR_TRAIN, NCBI_TRAIN])
    write_lexicon(built, tmp_path / "lexicon.json")
    assert (tmp_path / "lexicon.json").read_text(encoding="utf-8") == SHIPPED.read_text(encoding="utf-8")
    shipped = json.loads(SHIPPED.read_text(encoding="utf-8"))
    assert shipped["version"] == VERSION and set(shipped["types"]) == {"Chemical", "Disease"}
    assert shipped["counts"]["Disease"]["concepts"] > 1000 and shipped["counts"]["Chemical"]["concepts"] > 600
    names = read_lexicon(SHIPPED)
    assert "cisplatin" in {n.lower() for n in names["Chemical"]} and "colorectal cancer" in {n.lower() for n in names["Disease"]}
    (tmp_path / "old.json").write_text(json.dumps({"version": 0, "types": {}}), encoding="utf-8")
    with pytest.raises(ValueError, match="version"):
        read_lexicon(tmp_path / "old.json")


def test_dense_samples_tag_the_names_of_the_sources_types_only():
    names = read_lexicon(SHIPPED)
    samples = dense_samples(names, ["Disease"], 50, 6, seed=3)
    assert len(samples) == 50 and samples == dense_samples(names, ["Disease"], 50, 6, seed=3)
    chemicals, diseases = set(names["Chemical"]), set(names["Disease"])
    for sentence, spans in samples:
        tagged = [sentence.text[s.start : s.end] for s in spans]
        assert spans and all(s.type == "Disease" for s in spans) and set(tagged) <= diseases
        assert len(sentence.text.split(", ")) >= 6 or any("," in n for n in tagged)
        target = render(sentence.text, spans, ["Disease"])  # LLMNER's answer parses back to the spans
        assert sorted((s.start, s.end) for s in parse(target, sentence.text, ["Disease"]).spans) == sorted((s.start, s.end) for s in spans)
    listed = {n for sentence, _ in samples for n in names["Chemical"] if f", {n}," in f", {sentence.text},"}
    assert listed and listed <= chemicals  # other types' names are listed, untagged
    assert dense_samples(names, ["Gene"], 5, 6, seed=0) == []  # no name of the type: nothing to add
