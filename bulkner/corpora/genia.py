"""GENIA nested NER: the original 3.02 XML (``GENIAcorpus3.02.xml``, also inside its ``.tgz``) and
the tokenized JSON split (``genia_test.json``, Finkel & Manning / Shibuya split).

XML: each ``<article>`` becomes document ``medline:<UI>`` (from ``bibliomisc MEDLINE:<UI>``) with a
title passage and an abstract passage, each its ``<sentence>`` texts joined by one space. Every
``<cons>`` element is a mention spanning the element's text, so nesting is kept. Its ``sem`` is
grouped into the five JNLPBA classes by prefix (``G#protein_*`` → ``protein``, ``G#DNA_*`` →
``DNA``, ``G#RNA_*`` → ``RNA``, ``G#cell_type``, ``G#cell_line``); other ``<cons>`` are skipped
and counted by reason: ``coordination`` (``(AND G#.. G#..)`` and other operators), ``no_sem``,
``other_type``. Articles are kept in file order even when an id repeats (GENIA 3.02 holds
MEDLINE:97218353 twice, same text, different annotations); callers decide which to use.

JSON: sentences ``{"tokens", "entities": [{"start", "end" (exclusive token index), "type"}],
"org_id"}``. Sentences sharing an ``org_id`` form one document ``genia:<org_id with / as ->``,
one ``text`` passage per sentence (tokens joined by single spaces), in file order.
"""

from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path
from typing import IO, Mapping

from lxml import etree

from bulkner.corpora import GoldDocument
from bulkner.corpora.corpus import Corpus, Problem, place
from bulkner.schema import Document, Passage, Span

log = logging.getLogger(__name__)

GENIA_CLASSES = ("protein", "DNA", "RNA", "cell_type", "cell_line")
"""The five classes of the JNLPBA task, as GENIA groupings are usually evaluated."""

_Cons = tuple[int, int, "str | None"]


def genia_class(sem: str | None) -> tuple[str | None, str]:
    """``(class, "")`` for a ``sem`` value in one of the five classes, else ``(None, skip reason)``."""
    if not sem:
        return None, "no_sem"
    if sem.startswith("("):
        return None, "coordination"
    name = sem.removeprefix("G#")
    for prefix in ("protein", "DNA", "RNA"):
        if name.startswith(prefix):
            return prefix, ""
    if name in ("cell_type", "cell_line"):
        return name, ""
    return None, "other_type"


def element_text(el: etree._Element) -> tuple[str, list[_Cons]]:
    """Text content of ``el`` and ``(start, end, sem)`` of every ``<cons>`` inside it, outer first."""
    parts = [el.text or ""]
    spans: list[_Cons] = []
    pos = len(parts[0])
    for child in el:
        text, inner = element_text(child)
        if child.tag == "cons":
            spans.append((pos, pos + len(text), child.get("sem")))
        spans += [(s + pos, e + pos, sem) for s, e, sem in inner]
        tail = child.tail or ""
        parts += [text, tail]
        pos += len(text) + len(tail)
    return "".join(parts), spans


def _passage_text(part: etree._Element | None) -> tuple[str, list[_Cons]]:
    """Sentences of a ``<title>`` or ``<abstract>`` joined by one space, with their ``<cons>``."""
    texts: list[str] = []
    spans: list[_Cons] = []
    pos = 0
    for sentence in part.iterfind("sentence") if part is not None else ():
        text, inner = element_text(sentence)
        spans += [(s + pos, e + pos, sem) for s, e, sem in inner]
        texts.append(text)
        pos += len(text) + 1
    return " ".join(texts), spans


def genia_article(article: etree._Element, type_map: Mapping[str, str] | None = None) -> Corpus:
    """One ``<article>`` as a one-document corpus."""
    uid = (article.findtext("articleinfo/bibliomisc") or "").strip().removeprefix("MEDLINE:")
    doc_id = f"medline:{uid}"
    passages: list[Passage] = []
    mentions: list[tuple[int, Span]] = []
    problems: list[Problem] = []
    skipped: dict[str, int] = {}
    for kind in ("title", "abstract"):
        text, spans = _passage_text(article.find(kind))
        if not text:
            continue
        for start, end, sem in spans:
            name, reason = genia_class(sem)
            if name is None:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            result = place(doc_id, text, start, end, (type_map or {}).get(name, name))
            if isinstance(result, Problem):
                problems.append(result)
            else:
                mentions.append((len(passages), result))
        passages.append(Passage(kind, text))
    return Corpus([GoldDocument(Document(doc_id, 1, tuple(passages)), tuple(mentions))], tuple(problems), skipped)


def _open_xml(path: Path, tar: tarfile.TarFile | None) -> IO[bytes]:
    if tar is None:
        return path.open("rb")
    members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xml")]
    if len(members) != 1:
        raise ValueError(f"{path}: expected one .xml member in the archive, found {len(members)}")
    return tar.extractfile(members[0])  # type: ignore[return-value]


def read_genia_xml(path: str | Path, type_map: Mapping[str, str] | None = None) -> Corpus:
    """Every ``<article>`` of the GENIA 3.02 XML (a ``.xml`` file or the distribution ``.tgz``)."""
    path = Path(path)
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)
    tar = tarfile.open(path) if tarfile.is_tarfile(path) else None
    try:
        with _open_xml(path, tar) as stream:
            root = etree.parse(stream, parser).getroot()
    except etree.XMLSyntaxError as err:
        raise ValueError(f"{path}: not well-formed GENIA XML: {err}") from err
    finally:
        if tar is not None:
            tar.close()
    documents: list[GoldDocument] = []
    problems: list[Problem] = []
    skipped: dict[str, int] = {}
    for article in root.iter("article"):
        one = genia_article(article, type_map)
        documents += one.documents
        problems += one.problems
        for key, n in one.skipped.items():
            skipped[key] = skipped.get(key, 0) + n
    log.info("GENIA XML %s: %d articles, %d problems, skipped %s", path, len(documents), len(problems), skipped)
    return Corpus(documents, tuple(problems), skipped)


def _json_sentence(record: dict, doc_id: str, type_map: Mapping[str, str]) -> tuple[str, list[Span], list[Problem]]:
    """Text of one JSON sentence and its entity spans (or problems)."""
    tokens = record["tokens"]
    starts, pos = [], 0
    for token in tokens:
        starts.append(pos)
        pos += len(token) + 1
    text = " ".join(tokens)
    spans, problems = [], []
    for entity in record["entities"]:
        first, stop, kind = entity["start"], entity["end"], entity["type"]
        if not 0 <= first < stop <= len(tokens):
            problems.append(Problem(doc_id, "out_of_range", f"{kind} tokens [{first}, {stop}) of {len(tokens)}"))
            continue
        result = place(doc_id, text, starts[first], starts[stop - 1] + len(tokens[stop - 1]), type_map.get(kind, kind))
        (problems if isinstance(result, Problem) else spans).append(result)
    return text, spans, problems


def read_genia_json(path: str | Path, type_map: Mapping[str, str] | None = None) -> Corpus:
    """The tokenized GENIA JSON split: one document per ``org_id``, one passage per sentence."""
    documents: list[GoldDocument] = []
    problems: list[Problem] = []
    try:
        groups: dict[str, list[dict]] = {}
        for record in json.loads(Path(path).read_text(encoding="utf-8")):
            groups.setdefault(str(record["org_id"]), []).append(record)
        for org_id, sentences in groups.items():
            doc_id = "genia:" + org_id.replace("/", "-")
            passages, mentions = [], []
            for index, record in enumerate(sentences):
                text, spans, issues = _json_sentence(record, doc_id, type_map or {})
                passages.append(Passage("text", text))
                mentions += [(index, span) for span in spans]
                problems += issues
            documents.append(GoldDocument(Document(doc_id, 1, tuple(passages)), tuple(mentions)))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: expected a JSON list of sentences with tokens, entities, org_id: {err!r}") from err
    for problem in problems:
        log.warning("GENIA JSON %s: %s (%s)", problem.record, problem.reason, problem.detail)
    return Corpus(documents, tuple(problems))
