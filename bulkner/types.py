"""Entity types: names, the labels the model writes, and the definitions the prompt gives.

Presets cover the common biomedical types; users add their own with a JSON file mapping
``name -> definition`` (``--types-file``). A type's label is its name, as in LLMNER's outputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence


@dataclass(frozen=True)
class EntityType:
    """An entity type the model is asked to tag."""

    name: str
    definition: str

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip() or any(c in self.name for c in "[]:\n"):
            raise ValueError(f"entity type name must be non-empty, trimmed, without [ ] : or newline: {self.name!r}")
        if not self.definition.strip():
            raise ValueError(f"entity type {self.name!r} needs a definition")


PRESETS: dict[str, str] = {
    "Chemical": "chemical compounds, drugs and other substances, including elements, ions, "
    "molecular formulas, abbreviations of chemicals and drug brand names",
    "Disease": "diseases, disorders, syndromes, symptoms, signs and abnormalities, including "
    "adverse effects and toxicities, and their abbreviations",
    "Gene": "genes and gene products: proteins, protein families, complexes, domains and "
    "motifs, receptors, enzymes and their abbreviations",
    "Species": "organisms named by scientific or common name, including taxa, strains, viruses and "
    "bacteria, and words such as patients or mice that denote a species",
    "CellLine": "named cell lines, cultured cell populations such as HeLa, HEK293 or Jurkat",
    "CellType": "types of cells defined by morphology or function, such as T lymphocytes, neurons "
    "or hepatocytes",
    "DNA": "DNA sequences and regions: genes as DNA, promoters, enhancers, binding sites, motifs "
    "and other DNA elements",
    "RNA": "RNA molecules and transcripts: mRNA, microRNA, non-coding RNA and named RNA species",
    "Variant": "sequence variants and mutations at DNA or protein level, such as p.Arg273His, "
    "c.35delG or rs1042522",
}
"""Built-in types and their definitions (one sentence each, written for the prompt)."""


RENAMED = {"Gene/Protein": "Gene"}
"""Former preset names and the preset each now is."""


def preset(name: str) -> EntityType:
    """The preset type called ``name`` (or formerly called so, ``RENAMED``); raises ValueError
    listing the presets when unknown."""
    name = RENAMED.get(name, name)
    if name not in PRESETS:
        raise ValueError(f"unknown entity type {name!r}; presets are {', '.join(PRESETS)} (or use --types-file)")
    return EntityType(name, PRESETS[name])


def read_types_file(path: str | Path) -> dict[str, str]:
    """Read user-defined types: a JSON object ``{"TypeName": "definition", ...}``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read types file {path}: {err}") from err
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"types file {path} must hold one JSON object mapping type name to definition")
    return data


def resolve_types(names: Iterable[str], types_file: str | Path | None = None) -> list[EntityType]:
    """Entity types for ``names``, from the types file first, then the presets.

    An empty ``names`` with a types file means every type of the file.
    """
    custom = read_types_file(types_file) if types_file else {}
    wanted: Sequence[str] = list(names) or list(custom)
    if not wanted:
        raise ValueError("no entity types given")
    return [EntityType(n, custom[n]) if n in custom else preset(n) for n in wanted]
