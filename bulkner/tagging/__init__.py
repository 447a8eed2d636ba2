"""LLMNER symbolic tagging: render spans as tagged text and parse model output back to spans."""

from bulkner.tagging.format import NO_ENTITIES, escape, render, resolve_crossing, unescape
from bulkner.tagging.parse import ParseResult, normalize_label, parse

__all__ = [
    "NO_ENTITIES",
    "ParseResult",
    "escape",
    "normalize_label",
    "parse",
    "render",
    "resolve_crossing",
    "unescape",
]
