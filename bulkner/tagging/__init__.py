"""LLMNER symbolic tagging: render spans as tagged text and parse model output back to spans."""

VERSION = "1"
"""Changes whenever the tagging format or the parser changes; part of the output fingerprint."""

from bulkner.tagging.format import NO_ENTITIES, escape, render, resolve_crossing, unescape
from bulkner.tagging.parse import ParseResult, normalize_label, parse

__all__ = [
    "VERSION",
    "NO_ENTITIES",
    "ParseResult",
    "escape",
    "normalize_label",
    "parse",
    "render",
    "resolve_crossing",
    "unescape",
]
