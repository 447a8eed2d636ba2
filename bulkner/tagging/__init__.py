"""LLMNER symbolic tagging: render spans as tagged text and parse model output back to spans."""

VERSION = "2"
"""Changes whenever the tagging format or the parser changes; part of the output fingerprint
(2: source square brackets written as parentheses, ``format.source_view``)."""

from bulkner.tagging.format import NO_ENTITIES, escape, render, resolve_crossing, unescape
from bulkner.tagging.parse import ParseResult, normalize_label, parse
from bulkner.tagging.formats import DEFAULT_FORMAT, FORMATS, AnswerFormat, answer_format

__all__ = [
    "VERSION",
    "DEFAULT_FORMAT",
    "FORMATS",
    "AnswerFormat",
    "answer_format",
    "NO_ENTITIES",
    "ParseResult",
    "escape",
    "normalize_label",
    "parse",
    "render",
    "resolve_crossing",
    "unescape",
]
