"""The pipeline steps: segmentation into sentences, tagging with id-checked joins."""

from __future__ import annotations

import pytest

from bulkner.engines.base import Generation
from bulkner.engines.oracle import OraclePrompts
from bulkner.pipeline.tagger import Tagger, TagStats, segment
from bulkner.schema import Document, Passage
from bulkner.types import resolve_types

TYPES = resolve_types(["Chemical", "Disease"])
DOC = Document(
    "pmid:1",
    2,
    (
        Passage("title", "Cisplatin nephrotoxicity in rats."),
        Passage("abstract", "We gave cisplatin i.v. to rats. Renal failure followed. Magnesium helped."),
    ),
)
ANSWERS = {
    "pmid:1/0/0": "Chemical:  [Cisplatin] nephrotoxicity in rats.  \nDisease:  Cisplatin [nephrotoxicity] in rats.",
    "pmid:1/1/0": "Chemical:  We gave [cisplatin] i.v. to rats.",
    "pmid:1/1/1": "Disease:  [Renal failure] followed.",
    "pmid:1/1/2": "Chemical:  [Magnesium] helped.",
}


class ReverseEngine:
    """Answers in reverse order, as a batching engine may."""

    name = "reverse"

    def __init__(self, answers, drop=None, double=None):
        self.answers, self.drop, self.double = answers, drop, double

    def generate(self, prompts):
        out = [Generation(p.id, self.answers[p.id], 3, 5) for p in prompts if p.id != self.drop]
        if self.double:
            out.append(Generation(self.double, self.answers[self.double], 3, 5))
        return out[::-1]

    def close(self):
        pass


def test_segment_offsets_point_into_passages():
    sentences, rejects = segment([DOC], max_chars=2000)
    assert not rejects
    assert [s.key for s in sentences] == list(ANSWERS)
    for s in sentences:
        assert DOC.passages[s.passage_index].text[s.start : s.end] == s.text
        assert s.doc_version == 2


def test_segment_rejects_overlong_sentences():
    sentences, rejects = segment([DOC], max_chars=24)
    assert [s.key for s in sentences] == ["pmid:1/1/1", "pmid:1/1/2"]
    assert {r.reason for r in rejects} == {"sentence_too_long"}
    assert {r.record for r in rejects} == {"pmid:1/0/0", "pmid:1/1/0"}


def test_tagger_joins_reversed_answers_by_id_and_maps_to_passage_offsets():
    sentences, _ = segment([DOC], 2000)
    stats = TagStats()
    entities, rejects = Tagger(ReverseEngine(ANSWERS), OraclePrompts(TYPES), batch_sentences=3).tag(sentences, stats)
    assert not rejects
    got = [(e.sentence.passage_index, DOC.passages[e.sentence.passage_index].text[e.start : e.end], e.type) for e in entities]
    assert got == [
        (0, "Cisplatin", "Chemical"),
        (0, "nephrotoxicity", "Disease"),
        (1, "cisplatin", "Chemical"),
        (1, "Renal failure", "Disease"),
        (1, "Magnesium", "Chemical"),
    ]
    assert stats.prompts == 4 and stats.prompt_tokens == 12 and stats.output_tokens == 20
    assert stats.entities == {"Chemical": 3, "Disease": 2}


@pytest.mark.parametrize("engine", [ReverseEngine(ANSWERS, drop="pmid:1/1/1"), ReverseEngine(ANSWERS, double="pmid:1/1/0")])
def test_tagger_fails_loudly_on_lost_or_doubled_output(engine):
    sentences, _ = segment([DOC], 2000)
    with pytest.raises(RuntimeError, match="generation"):
        Tagger(engine, OraclePrompts(TYPES), batch_sentences=10).tag(sentences, TagStats())


def test_unplaceable_spans_become_parse_rejects():
    sentences, _ = segment([DOC], 2000)
    answers = dict(ANSWERS, **{"pmid:1/1/2": "Chemical:  [Zinc] helped."})
    entities, rejects = Tagger(ReverseEngine(answers), OraclePrompts(TYPES), 10).tag(sentences, TagStats())
    assert "Zinc" not in {e.text for e in entities}
    assert [r.stage for r in rejects] == ["parse"]
    assert rejects[0].record.startswith("pmid:1/1/2")


class ThresholdSelector:
    """A stand-in selector with a fixed score per mention text (the real one is tested end to end
    in tests/test_cli.py and tests/test_selector.py)."""

    threshold = 0.5

    def __init__(self, scores):
        self.scores = scores
        self.seen = []

    def score(self, candidates):
        self.seen += candidates
        return [self.scores[c.sentence[c.start : c.end]] for c in candidates]

    def keep(self, scores):
        return [s >= self.threshold for s in scores]

    band = None

    def probs_by_text(self, sentences):
        return {text: f"probs of {text}" for text in sentences}

    def select(self, candidates, owners, sentences, types, probs=None):
        assert all(c.sentence == sentences[k] for c, k in zip(candidates, owners))
        scores = self.score(candidates)
        return scores, self.keep(scores), []

    def close(self):
        pass


class AddingSelector(ThresholdSelector):
    """Keeps what scores over 0.5 and adds every "Magnesium" the generator did not propose."""

    def select(self, candidates, owners, sentences, types, probs=None):
        scores, keep, _ = super().select(candidates, owners, sentences, types)
        added = [(k, text.index("Magnesium"), text.index("Magnesium") + 9, "Chemical", 0.99) for k, text in enumerate(sentences) if "Magnesium" in text]
        return scores, keep, added


def test_selector_scores_and_filters_parsed_spans():
    sentences, _ = segment([DOC], 2000)
    scores = {"Cisplatin": 0.9, "nephrotoxicity": 0.2, "cisplatin": 0.7, "Renal failure": 0.5, "Magnesium": 0.1}
    selector = ThresholdSelector(scores)
    stats = TagStats()
    tagger = Tagger(ReverseEngine(ANSWERS), OraclePrompts(TYPES), 2, selector)
    entities, _ = tagger.tag(sentences, stats)
    kept = {(e.text, e.score) for e in entities}
    assert kept == {("Cisplatin", 0.9), ("cisplatin", 0.7), ("Renal failure", 0.5)}
    assert stats.selector_dropped == 2 and stats.entities == {"Chemical": 2, "Disease": 1}
    assert {c.type.name for c in selector.seen} == {"Chemical", "Disease"} and len(selector.seen) == 5
    assert stats.selector_seconds > 0 and stats.generate_seconds > 0
    tagger.dropped = []  # evaluation keeps the dropped spans too, with their scores
    tagger.tag(sentences, TagStats())
    dropped = {(e.text, e.score) for e in tagger.dropped}
    assert dropped == {("nephrotoxicity", 0.2), ("Magnesium", 0.1)}


def test_span_selector_additions_become_entities():
    from dataclasses import replace as copy

    twin = copy(DOC, doc_id="pmid:2")  # the same sentences in another document: each gets its own additions
    sentences, _ = segment([DOC, twin], 2000)
    answers = ANSWERS | {k.replace("pmid:1", "pmid:2"): v for k, v in ANSWERS.items()}
    scores = {"Cisplatin": 0.9, "nephrotoxicity": 0.2, "cisplatin": 0.7, "Renal failure": 0.5, "Magnesium": 0.1}
    stats = TagStats()
    tagger = Tagger(ReverseEngine(answers), OraclePrompts(TYPES), 10, AddingSelector(scores))  # both twins in one call
    tagger.added = []
    entities, _ = tagger.tag(sentences, stats)
    text = {(e.sentence.doc_id, DOC.passages[e.sentence.passage_index].text[e.start : e.end], e.score) for e in entities}
    assert {("pmid:1", "Magnesium", 0.99), ("pmid:2", "Magnesium", 0.99)} <= text  # dropped as proposed, added back
    assert not any(score == 0.1 for *_, score in text)
    assert stats.selector_added == len(tagger.added) == 2 and stats.selector_dropped == 4
    assert stats.entities["Chemical"] == 6  # Cisplatin, cisplatin and the added Magnesium, twice


def test_spans_the_constraint_forced_on_the_model_are_left_to_the_selector():
    """A constrained answer's span that forced text touches (``Generation.forced``) is not the
    model's proposal: with a selector it is left out (the selector adds what it is sure of); without
    one it stays."""
    sentences, _ = segment([DOC], 2000)
    answers = {"pmid:1/0/0": "[Chemical Cisplatin] [Disease nephrotoxicity] in rats.", "pmid:1/1/0": "We gave [Chemical cisplatin] i.v. to rats.",
               "pmid:1/1/1": "[Disease Renal failure] followed.", "pmid:1/1/2": "Magnesium helped."}
    forced = {"pmid:1/1/0": ((answers["pmid:1/1/0"].index("]"), answers["pmid:1/1/0"].index("]") + 1),),  # its closing bracket
              "pmid:1/1/2": ((0, 9),)}  # text outside any mention
    engine = ReverseEngine(answers)
    engine.generate = lambda prompts: [Generation(p.id, answers[p.id], 3, 5, forced=forced.get(p.id, ())) for p in prompts]
    scores = {"Cisplatin": 0.9, "nephrotoxicity": 0.9, "cisplatin": 0.9, "Renal failure": 0.9}
    selector, stats = ThresholdSelector(scores), TagStats()
    entities, _ = Tagger(engine, OraclePrompts(TYPES, "brackets"), 10, selector).tag(sentences, stats)
    assert [e.text for e in entities] == ["Cisplatin", "nephrotoxicity", "Renal failure"]
    assert stats.forced == 1 and "cisplatin" not in {c.sentence[c.start : c.end] for c in selector.seen}
    entities, _ = Tagger(engine, OraclePrompts(TYPES, "brackets"), 10).tag(sentences, TagStats())
    assert [e.text for e in entities] == ["Cisplatin", "nephrotoxicity", "cisplatin", "Renal failure"]


def test_a_window_answers_forced_ranges_count_from_its_generated_text():
    """In a window answer the prompt's head is written already: ``Generation.forced`` counts from the
    generated text, after the head."""
    from bulkner.engines.base import Prompt
    from bulkner.selectors import Window

    sentence = segment([DOC], 2000)[0][1]  # "We gave cisplatin i.v. to rats."
    generated = " [Chemical cisplatin] i.v. to rats."
    tagger = Tagger(ReverseEngine({}), OraclePrompts(TYPES, "brackets"), 10, ThresholdSelector({"cisplatin": 0.9}))
    prompt = Prompt(sentence.key, (), 20, answer_prefix="We gave")
    for forced, kept in (("i.v.", ["cisplatin"]), ("]", [])):  # "i.v." read from the answer's start would fall in the mention
        at = generated.index(forced)
        found, stats = [], TagStats()
        tagger._collect(sentence, prompt, Generation(sentence.key, generated, 3, 5, forced=((at, at + len(forced)),)), stats, found, [], Window(7, len(sentence.text)))
        assert [e.text for e in found] == kept and stats.forced == 1 - len(kept)


class TriageSelector(ThresholdSelector):
    """The cascade's stand-in: decides alone every sentence without "Renal" (its spans: each
    "Magnesium" as Chemical), hands the others to the generator with their scores."""

    band = (0.05, 0.9)

    def triage(self, sentences, types):
        decided = [None if "Renal" in text else [(k, text.index(m), text.index(m) + 9, "Chemical", 0.97) for m in ["Magnesium"] if m in text]
                   for k, text in enumerate(sentences)]
        return [f"probs of {text}" for text in sentences], decided

    def select(self, candidates, owners, sentences, types, probs=None):
        assert probs == [f"probs of {text}" for text in sentences]  # computed once, by triage
        return super().select(candidates, owners, sentences, types)


def test_the_cascade_generates_only_the_sentences_the_classifier_is_unsure_of():
    sentences, _ = segment([DOC], 2000)
    engine = ReverseEngine(ANSWERS)
    prompted = []
    engine.generate = lambda prompts, generate=engine.generate: prompted.extend(p.id for p in prompts) or generate(prompts)
    stats = TagStats()
    tagger = Tagger(engine, OraclePrompts(TYPES), 10, TriageSelector({"Renal failure": 0.8}), cascade=True)
    entities, rejects = tagger.tag(sentences, stats)
    assert prompted == ["pmid:1/1/1"] and not rejects
    found = {(DOC.passages[e.sentence.passage_index].text[e.start : e.end], e.type, e.origin) for e in entities}
    assert found == {("Renal failure", "Disease", "generator"), ("Magnesium", "Chemical", "classifier")}
    assert stats.classified == 3 and stats.prompts == 1 and stats.entities == {"Chemical": 1, "Disease": 1}
    with pytest.raises(ValueError, match="calibrated cascade band"):
        Tagger(engine, OraclePrompts(TYPES), 10, ThresholdSelector({}), cascade=True)


def test_within_a_shard_the_last_record_of_a_document_wins(tmp_path):
    from bulkner.connectors.discover import collect

    def article(pmid, title):
        return (f"<PubmedArticle><MedlineCitation><PMID Version='1'>{pmid}</PMID><Article>"
                f"<ArticleTitle>{title}</ArticleTitle></Article></MedlineCitation></PubmedArticle>")

    xml = ("<PubmedArticleSet>" + article(1, "Old.") + article(1, "New.") + article(2, "Deleted.")
           + article(3, "Revived.") + "<DeleteCitation><PMID>2</PMID><PMID>3</PMID><PMID>4</PMID></DeleteCitation>"
           + "</PubmedArticleSet>")
    (tmp_path / "s.xml").write_text(xml)
    documents, tombstones, rejects, replaced = collect(str(tmp_path / "s.xml"))
    assert [(d.doc_id, d.passages[0].text) for d in documents] == [("pmid:1", "New.")]
    assert sorted(t.doc_id for t in tombstones) == ["pmid:2", "pmid:3", "pmid:4"]
    assert replaced == 1 and not rejects


def test_the_document_pass_makes_abbreviations_agree_across_sentences():
    """The README sample's defect: "latent TB infection (LTBI)" is a Disease, later "LTBI" came out
    as Chemical, and "FBP", defined as a population, as Chemical. With the pass: every LTBI is a
    Disease (the unmarked one added), FBP dropped; without it the entities are as tagged."""
    doc = Document("pmid:9", 1, (Passage("abstract", "We screened for latent TB infection (LTBI) in foreign-born persons (FBP). "
                                                     "LTBI was common among FBP. Treating LTBI helps."),))
    answers = {
        "pmid:9/0/0": "Disease:  We screened for [latent TB infection] (LTBI) in foreign-born persons (FBP).",
        "pmid:9/0/1": "Chemical:  [LTBI] was common among [FBP].",
        "pmid:9/0/2": "None",
    }
    sentences, _ = segment([doc], 2000)
    for on in (True, False):
        stats = TagStats()
        tagger = Tagger(ReverseEngine(answers), OraclePrompts(TYPES), 10, abbreviations=on)
        entities = tagger.finish_documents(sentences, tagger.tag(sentences, stats)[0], stats)
        found = sorted((doc.passages[0].text[e.start : e.end], e.start, e.type) for e in entities)
        if on:
            assert found == [("LTBI", 37, "Disease"), ("LTBI", 74, "Disease"), ("LTBI", 110, "Disease"),
                             ("latent TB infection", 16, "Disease")]
            assert stats.abbreviations == {"definitions": 2, "retyped": 1, "added": 2, "dropped": 1}
            assert stats.entities == {"Disease": 4}
        else:
            assert [t for *_, t in found] == ["Chemical", "Chemical", "Disease"] and not stats.abbreviations


BRCA1_DOC = Document("pmid:10788334", 1, (
    Passage("title", "BRCA1 protein in sporadic breast cancer."),
    Passage("abstract", "We studied BRCA1 expression in 20 tumours. Loss of BRCA1 was frequent.")))
"""Real sentences (PMID 10788334, BioRED) where the tagger finds BRCA1 in the title only (``BRCA1_ANSWERS``)."""
BRCA1_ANSWERS = {"pmid:10788334/0/0": "[Gene BRCA1] protein in sporadic [Disease breast cancer].",
                 "pmid:10788334/1/0": "We studied BRCA1 expression in 20 tumours.", "pmid:10788334/1/1": "Loss of BRCA1 was frequent."}


class ConfirmingSelector(ThresholdSelector):
    """Keeps every generator span; confirms a propagated name by the sentence it stands in."""

    def confirm(self, candidates, owners, sentences, known=None):
        assert all(c.sentence == sentences[k] for c, k in zip(candidates, owners))
        self.seen += candidates
        return [self.scores[c.sentence] for c in candidates]


def test_the_document_pass_proposes_a_tagged_name_where_it_recurs_and_the_selector_decides():
    """Real sentences (PMID 10788334, BioRED): the tagger found BRCA1 in the title only. The
    other two occurrences are proposed as Gene; the selector keeps the one it scores at its keep
    threshold. Without a selector, or with --no-names, nothing is proposed."""
    types = resolve_types(["Gene", "Disease"])
    sentences, _ = segment([BRCA1_DOC], 2000)
    scores = {"We studied BRCA1 expression in 20 tumours.": 0.8, "Loss of BRCA1 was frequent.": 0.2}
    for selector, names, expected in ((ConfirmingSelector(scores), True, [("Gene", 11, 0.8)]),
                                      (ConfirmingSelector(scores), False, []), (None, True, [])):
        if selector is not None:
            selector.scores |= {"BRCA1": 0.9, "breast cancer": 0.9}
        stats = TagStats()
        tagger = Tagger(ReverseEngine(BRCA1_ANSWERS), OraclePrompts(types, "brackets"), 10, selector, names=names)
        entities = tagger.finish_documents(sentences, tagger.tag(sentences, stats)[0], stats)
        added = [(e.type, e.start, e.score) for e in entities if e.origin == "propagated"]
        assert added == expected
        assert len(entities) == 2 + len(expected)
        if expected:
            assert stats.names == {"proposed": 2, "kept": 1} and stats.entities["Gene"] == 2


class WindowSelector(ThresholdSelector):
    """``--generate window``'s stand-in: every sentence with "renal" goes to the generator for the
    stretch from " the" to " caused" (or to its end); the classifier knows the Chemicals outside it and adds them."""

    band = (0.05, 0.9)

    def triage(self, sentences, types):
        return [f"probs of {text}" for text in sentences], [None if "renal" in text else [] for text in sentences]

    def windows(self, sentences, probs, types):
        from bulkner.selectors import Window

        assert probs == [f"probs of {text}" for text in sentences]
        chemicals = lambda text: tuple((text.index(c), text.index(c) + len(c), "Chemical") for c in ("Magnesium", "cisplatin") if c in text)
        return [Window(text.index(" the"), text.index(" caused") if " caused" in text else len(text), chemicals(text)) for text in sentences]

    def select(self, candidates, owners, sentences, types, probs=None):
        scores = [0.9] * len(candidates)
        added = [(k, s, e, t, 0.97) for k, text in enumerate(sentences) for s, e, t in self.windows([text], [f"probs of {text}"], types)[0].outside]
        return scores, [True] * len(candidates), added


def test_the_window_cascade_generates_only_the_uncertain_stretch_and_the_classifier_decides_outside(tiny_model_dir):
    from transformers import AutoTokenizer

    from bulkner.pipeline.prompt import PromptBuilder

    doc = Document("pmid:7", 1, (Passage("abstract", "Magnesium lowered the renal failure rate caused by cisplatin in rats. "
                                                    "Rats got the renal dose. Nothing else."),))
    sentences, _ = segment([doc], 2000)
    answers = {"pmid:7/0/0": " the [Disease renal failure] rate caused by [Chemical cisplatin] in rats.",  # past the stop, as transformers does
               "pmid:7/0/1": " None"}
    engine = ReverseEngine(answers)
    prompted = []
    engine.generate = lambda prompts, generate=engine.generate: prompted.extend(prompts) or generate(prompts)
    builder = PromptBuilder(TYPES, AutoTokenizer.from_pretrained(tiny_model_dir), 2048, "brackets")
    stats = TagStats()
    tagger = Tagger(engine, builder, 10, WindowSelector({}), window=True)
    entities, rejects = tagger.tag(sentences, stats)
    assert [(p.answer_prefix, p.stop) for p in prompted] == [("[Chemical Magnesium] lowered", " caused"), ("Rats got", None)]
    found = {(doc.passages[0].text[e.start : e.end], e.type, e.origin) for e in entities}
    assert found == {("Magnesium", "Chemical", "classifier"), ("renal failure", "Disease", "generator"), ("cisplatin", "Chemical", "classifier")}
    assert not rejects and stats.classified == 1 and stats.prompts == 2
    with pytest.raises(ValueError, match="copies the sentence once"):
        Tagger(engine, PromptBuilder(TYPES, AutoTokenizer.from_pretrained(tiny_model_dir), 2048, "blocks"), 10, WindowSelector({}), window=True)


def test_the_cascade_gathers_the_prompts_of_several_batches_into_one_engine_call():
    sentences, _ = segment([DOC], 2000)
    engine = ReverseEngine(ANSWERS)
    calls = []
    engine.generate = lambda prompts, generate=engine.generate: calls.append([p.id for p in prompts]) or generate(prompts)
    renal = TriageSelector({"Renal failure": 0.8, "Cisplatin": 0.9, "nephrotoxicity": 0.9})
    renal.triage = lambda texts, types: ([f"probs of {t}" for t in texts], [None if "Renal" in t or "nephro" in t else [] for t in texts])
    progress = []
    bar = type("Bar", (), {"update": lambda self, n: progress.append(n)})()
    known: dict = {}
    entities, _ = Tagger(engine, OraclePrompts(TYPES), 2, renal, cascade=True).tag(sentences, TagStats(), bar, known)
    # batches of 2 sentences: [title, s0] has one prompt, [s1, s2] one more; gathered into one call of 2
    assert calls == [["pmid:1/0/0", "pmid:1/1/1"]] and progress == [4]
    assert {e.origin for e in entities} == {"generator"} and len(entities) == 3
    assert known == {s.text: f"probs of {s.text}" for s in sentences}  # every sentence's, for the document pass


class KnownSelector(ConfirmingSelector, TriageSelector):
    """The cascade's stand-in whose ``confirm`` records the scores it was handed."""

    def confirm(self, candidates, owners, sentences, known=None):
        self.known = known
        return super().confirm(candidates, owners, sentences)


def test_name_propagation_gets_the_scores_the_cascade_computed():
    """BRCA1 tagged in the title is proposed in the abstract's sentences; the selector confirms
    them with the scores its triage computed for the same chunk (no second encoding)."""
    types = resolve_types(["Gene", "Disease"])
    sentences, _ = segment([BRCA1_DOC], 2000)
    selector = KnownSelector({"BRCA1": 0.9, "breast cancer": 0.9, "We studied BRCA1 expression in 20 tumours.": 0.8,
                              "Loss of BRCA1 was frequent.": 0.2})
    selector.triage = lambda texts, types: ([f"probs of {t}" for t in texts], [None] * len(texts))
    stats, known = TagStats(), {}
    tagger = Tagger(ReverseEngine(BRCA1_ANSWERS), OraclePrompts(types, "brackets"), 10, selector, cascade=True, names=True)
    entities = tagger.finish_documents(sentences, tagger.tag(sentences, stats, None, known)[0], stats, known)
    assert selector.known == {s.text: f"probs of {s.text}" for s in sentences}
    assert [(e.type, e.start, e.origin) for e in entities if e.origin == "propagated"] == [("Gene", 11, "propagated")]
    # generating every sentence: finish scores them once, and the document pass gets those scores
    selector.known, stats, known = None, TagStats(), {}
    tagger = Tagger(ReverseEngine(BRCA1_ANSWERS), OraclePrompts(types, "brackets"), 10, selector, names=True)
    entities = tagger.finish_documents(sentences, tagger.tag(sentences, stats, None, known)[0], stats, known)
    assert selector.known == {s.text: f"probs of {s.text}" for s in sentences}
    assert [(e.type, e.start, e.origin) for e in entities if e.origin == "propagated"] == [("Gene", 11, "propagated")]
