"""PubTator files (NCBI-disease, BC5CDR): ``PMID|t|title``, ``PMID|a|abstract``, then mention lines
``PMID<TAB>start<TAB>end<TAB>text<TAB>type<TAB>concept`` with offsets into ``title + " " + abstract``.

The title becomes passage 0 and the abstract passage 1; mention offsets are moved into the passage
they fall in. Relation lines (``PMID<TAB>CID<TAB>...``) are skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Mapping

from bulkner.corpora import GoldDocument
from bulkner.schema import Document, Passage, Span

log = logging.getLogger(__name__)

NCBI_DISEASE_TYPES = {t: "Disease" for t in ("SpecificDisease", "Modifier", "DiseaseClass", "CompositeMention")}
"""NCBI-disease's four mention classes all count as Disease."""
BIORED_TYPES = {"GeneOrGeneProduct": "Gene", "ChemicalEntity": "Chemical", "DiseaseOrPhenotypicFeature": "Disease",
                "OrganismTaxon": "Species", "SequenceVariant": "Variant", "CellLine": "CellLine"}
"""BioRED's six labels to the model's types."""
TMVAR_TYPES = {t: "Variant" for t in ("ProteinMutation", "DNAMutation", "OtherMutation", "SNP", "AcidChange",
                                      "ProteinAllele", "DNAAllele")}
"""tmVar3's variant classes (mutations at protein and DNA level, SNPs, alleles, amino-acid changes)
all count as Variant, BioRED's single class; its Gene, Species and CellLine keep their names."""
PUBTATOR_TYPES = {**NCBI_DISEASE_TYPES, **BIORED_TYPES, **TMVAR_TYPES}
"""The default map of the ``pubtator`` format: BC5CDR's Chemical and Disease keep their names."""


def _blocks(path: Path) -> Iterator[list[str]]:
    block: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            block.append(line)
        elif block:
            yield block
            block = []
    if block:
        yield block


def _document(block: list[str], type_map: Mapping[str, str]) -> GoldDocument:
    pmid, _, title = block[0].split("|", 2)
    abstract = block[1].split("|", 2)[2]
    passages = [Passage("title", title)] + ([Passage("abstract", abstract)] if abstract else [])
    mentions = []
    for line in block[2:]:
        fields = line.split("\t")
        if len(fields) < 5 or not fields[1].isdigit():
            continue  # relation line
        start, end, kind = int(fields[1]), int(fields[2]), fields[4]
        index, offset = (0, 0) if end <= len(title) else (1, len(title) + 1)
        mentions.append((index, Span(start - offset, end - offset, type_map.get(kind, kind))))
    return GoldDocument(Document(f"pmid:{pmid}", 1, tuple(passages)), tuple(mentions))


def read_pubtator(path: str | Path, type_map: Mapping[str, str] | None = None) -> list[GoldDocument]:
    """Every document of a PubTator file, in file order (repeated PMIDs are kept; callers decide)."""
    return [_document(block, type_map or {}) for block in _blocks(Path(path))]
