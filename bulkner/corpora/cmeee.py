"""CMeEE-V2 (CBLUE Chinese medical NER) JSON: a list of ``{"text", "entities": [{"start_idx",
"end_idx" (inclusive), "type", "entity"}]}``.

Each sentence becomes document ``cmeee:<index>`` (0-based position in the file) with one ``text``
passage; spans are ``[start_idx, end_idx + 1)`` and must equal the stated ``entity``. Types keep
their nine codes (``bod``, ``dis``, ...); ``CMEEE_TYPES`` gives each code's Chinese name. Nested
and crossing mentions are kept as given.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping

from bulkner.corpora import GoldDocument
from bulkner.corpora.corpus import Corpus, Problem, place
from bulkner.schema import Document, Passage, Span

log = logging.getLogger(__name__)

CMEEE_TYPES = {
    "dis": "疾病",
    "sym": "临床表现",
    "pro": "医疗程序",
    "equ": "医疗设备",
    "dru": "药物",
    "ite": "医学检验项目",
    "bod": "身体",
    "dep": "科室",
    "mic": "微生物类",
}
"""CMeEE type code → Chinese type name (the names LLMNER's prompts use)."""


def _sentence(record: object, doc_id: str, type_map: Mapping[str, str]) -> tuple[GoldDocument, list[Problem]]:
    """One JSON record as a gold document, with the entities that could not be placed."""
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise ValueError(f"{doc_id}: expected an object with a 'text' string")
    text = record["text"]
    spans: list[Span] = []
    problems: list[Problem] = []
    for entity in record.get("entities", []):
        try:
            start, last, kind = int(entity["start_idx"]), int(entity["end_idx"]), str(entity["type"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{doc_id}: bad entity {entity!r}") from err
        result = place(doc_id, text, start, last + 1, type_map.get(kind, kind), entity.get("entity"))
        (problems if isinstance(result, Problem) else spans).append(result)
    document = Document(doc_id, 1, (Passage("text", text),))
    return GoldDocument(document, tuple((0, span) for span in spans)), problems


def read_cmeee(path: str | Path, type_map: Mapping[str, str] | None = None) -> Corpus:
    """Every sentence of a CMeEE JSON file, in file order."""
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of sentences")
    documents: list[GoldDocument] = []
    problems: list[Problem] = []
    for index, record in enumerate(records):
        document, issues = _sentence(record, f"cmeee:{index}", type_map or {})
        documents.append(document)
        problems += issues
    for problem in problems:
        log.warning("CMeEE %s: %s (%s)", problem.record, problem.reason, problem.detail)
    return Corpus(documents, tuple(problems))
