"""VANER's dense knowledge-base samples: a lexicon of entity names by concept, and training samples
that are shuffled lists of those names.

The lexicon comes from the concept identifiers the PubTator corpora carry (BC5CDR's MeSH ids,
NCBI-disease's MeSH/OMIM ids): every surface form annotated with a concept is one of its names.
It is a small versioned JSON file (``bulkner lexicon``; ``bulkner/data/lexicon-v1.json`` is built
from the BC5CDR and NCBI-disease training sets). ``dense_samples`` turns it into VANER's extra
instruction samples: for each training sentence one sample whose input is a shuffled,
comma-separated list of names of the source's types and of other types, and whose answer tags the
names of the source's types (LLMNER's format, the inference prompt).
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from bulkner.corpora.pubtator import NCBI_DISEASE_TYPES
from bulkner.schema import Sentence, Span

VERSION = 1
NO_CONCEPT = {"", "-1", "-"}


def pubtator_concepts(path: str | Path) -> dict[str, dict[str, set[str]]]:
    """``{type: {concept id: surface forms}}`` from a PubTator file's annotation lines
    (``PMID<TAB>start<TAB>end<TAB>mention<TAB>type<TAB>concept ids``, NCBI-disease's four classes
    as ``Disease``); mentions without a concept id are skipped, and a mention of several concepts
    (``D001|D002``, ``D001+D002``) counts for each."""
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 6 or not fields[1].isdigit():
                continue
            kind = NCBI_DISEASE_TYPES.get(fields[4], fields[4])
            for concept in re.split(r"[|+,]", fields[5]):
                if concept.strip() not in NO_CONCEPT:
                    found[kind][concept.strip()].add(" ".join(fields[3].split()))
    return found


def build_lexicon(paths: Sequence[str | Path]) -> dict:
    """The lexicon of ``paths`` (PubTator files) as the JSON-able dict ``write_lexicon`` writes."""
    merged: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in paths:
        for kind, concepts in pubtator_concepts(path).items():
            for concept, names in concepts.items():
                merged[kind][concept] |= names
    types = {kind: {c: sorted(n) for c, n in sorted(concepts.items())} for kind, concepts in sorted(merged.items())}
    counts = {kind: {"concepts": len(c), "names": len({n for names in c.values() for n in names})} for kind, c in types.items()}
    return {"version": VERSION, "sources": [Path(p).name for p in paths], "counts": counts, "types": types}


def write_lexicon(lexicon: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(lexicon, ensure_ascii=False, indent=0, sort_keys=True) + "\n", encoding="utf-8")


def read_lexicon(path: str | Path) -> dict[str, list[str]]:
    """Distinct names by type of a lexicon file; refuses another version."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("version") != VERSION:
        raise ValueError(f"{path}: lexicon version {data.get('version')!r}, this bulkner reads version {VERSION}")
    return {kind: sorted({n for names in concepts.values() for n in names}) for kind, concepts in data["types"].items()}


def dense_samples(names: dict[str, list[str]], types: Sequence[str], count: int, per_sample: int, seed: int) -> list[tuple[Sentence, list[Span]]]:
    """``count`` VANER samples for a source of ``types``: each a shuffled comma-separated list of
    ``per_sample`` names, about half of ``types`` (the gold spans) and half of the lexicon's other
    types (no span: the model learns to leave them); empty when the lexicon has no name of ``types``."""
    rng = random.Random(seed)
    own = [(n, t) for t in types for n in names.get(t, [])]
    other = [(n, t) for t in names if t not in types for n in names[t]]
    if not own:
        return []
    samples = []
    for i in range(count):
        k_own = max(1, per_sample // 2) if other else per_sample
        picked = rng.sample(own, min(k_own, len(own))) + rng.sample(other, min(per_sample - k_own, len(other)))
        rng.shuffle(picked)
        text, spans = "", []
        for name, kind in picked:
            text += ", " if text else ""
            if kind in types:
                spans.append(Span(len(text), len(text) + len(name), kind))
            text += name
        samples.append((Sentence(f"vaner:{i}", 0, 0, 0, 0, len(text), text), spans))
    return samples
