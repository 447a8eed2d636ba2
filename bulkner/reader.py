"""Pick the connector for an input and read its records."""

from __future__ import annotations

from typing import Iterator

from bulkner.schema import Document, Reject, Tombstone

Record = Document | Tombstone | Reject


def read_records(url: str) -> Iterator[Record]:
    """Records of one shard: documents, tombstones and rejects, in file order.

    Raises ValueError for a format no connector reads.
    """
    name = url.lower().removesuffix(".gz")
    if name.endswith(".xml"):
        from bulkner.connectors.pubmed import read_pubmed

        return read_pubmed(url)
    raise ValueError(f"{url}: unsupported input format (PubMed XML, .xml or .xml.gz, is supported)")
