"""JNLPBA's cell_line phrases cut to BioRED's CellLine names (scripts/jnlpba_celllines.py), on the
real training archive: every written span is the name as the text spells it and reads back."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from bulkner.corpora.registry import read_corpus

ROOT = Path(__file__).resolve().parents[2]
ARCHIVE = ROOT.parent / "shared" / "data" / "ner" / "jnlpba" / "standoff-train.tar.gz"
spec = importlib.util.spec_from_file_location("jnlpba_celllines", ROOT / "scripts" / "jnlpba_celllines.py")
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)


@pytest.mark.parametrize("phrase, name", [
    ("Jurkat T cells", "Jurkat"),
    ("Jurkat T-cell line", "Jurkat"),
    ("human monocytic cell line", None),
    ("HL-60 cells", "HL-60"),
    ("Mono Mac 6 cells", "Mono Mac 6"),
    ("(U937)", "U937"),
    ("HUVECs", None),
    ("CD4+ T cells", None),
    ("EBV-transformed B cell lines", None),
    ("cell lines", None),
])
def test_a_phrase_is_cut_to_the_line_name_or_dropped(phrase, name):
    found = script.cut(phrase)
    assert (phrase[found[0]:found[1]] if found else None) == name


def test_a_phrase_longer_than_a_name_leaves_its_document_out():
    assert script.cut("XP-B and XP-D cells") == script.UNSURE
    assert script.cut("Epstein Barr Virus Transformed Line A cells") == script.UNSURE


def test_the_training_archive_gives_cell_line_names_that_read_back(tmp_path):
    if not ARCHIVE.is_file():
        pytest.skip(f"shared data missing: {ARCHIVE}")
    out = tmp_path / "cellline.PubTator"
    counts = script.convert(ARCHIVE, out)
    assert counts["documents"] == 2000 and counts["mentions"] == 3830
    corpus = read_corpus("pubtator", str(out))
    assert not corpus.problems  # offsets match the text (structured abstracts kept on one line)
    assert len(corpus.documents) == counts["documents_kept"] and corpus.type_counts() == {"CellLine": counts["mentions_kept"]}
    written = [line.split("\t")[3] for line in out.read_text(encoding="utf-8").splitlines() if line.count("\t") >= 5]
    assert "Jurkat" in written and "U937" in written
    assert not any(w.endswith((" cells", " cell", " line", " lines")) or w[0] == "(" for w in written)
