"""What the XML readers (PubMed, JATS) share: text flattening, freeing streamed elements, and the
errors that mean broken bytes."""

from __future__ import annotations

import gzip
import zlib

from lxml import etree

MALFORMED = (etree.XMLSyntaxError, EOFError, gzip.BadGzipFile, zlib.error)
"""Errors that mean the bytes are broken (bad or truncated XML or gzip), not the reader."""


def normalise_text(el: etree._Element | None) -> str:
    """Full text content of ``el`` (inline markup included), whitespace runs made one space.

    Any Unicode whitespace (no-break spaces included) counts; an unexpanded entity reference
    stays as its literal ``&name;`` text. Words split only by markup are joined (``Ca<sup>2+``
    gives ``Ca2+``); no text is dropped.
    """
    if el is None:
        return ""
    return " ".join("".join(el.itertext()).split())


def release(el: etree._Element) -> None:
    """Free a processed top-level element and the already processed siblings before it."""
    el.clear(keep_tail=True)
    parent = el.getparent()
    if parent is not None:
        while el.getprevious() is not None:
            del parent[0]
