"""What hashing every input whole costs (an input's identity, ``connectors/identity.py``).

    .venv/bin/python bench/identity.py                # a 4 GiB file, and a real PubMed file
    .venv/bin/python bench/identity.py --size-gib 1

Writes a file of ``--size-gib`` GiB (real gzipped PubMed bytes repeated) in a temporary folder and
times, on it, one plain read in 8 MiB pieces and ``content_hash`` (blake2b, streamed); the file was
just written, so both read from the page cache: this is the hash's CPU cost. Then times
``content_hash`` against ``bulkner split`` (no model) of the real ``medline16n0902.xml.gz`` (0.65 MB, 604 citations): the
hash's share of the cheapest run there is (tagging costs 100x more). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from bulkner.config import RunConfig
from bulkner.connectors.identity import HASH_CHUNK, content_hash
from bulkner.runner import local

ROOT = Path(__file__).resolve().parents[1]
MEDLINE = ROOT.parent / "shared" / "data" / "pubmed" / "medline16n0902.xml.gz"


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def read_all(path: Path) -> int:
    total = 0
    with path.open("rb") as f:
        while piece := f.read(HASH_CHUNK):
            total += len(piece)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=4.0)
    args = parser.parse_args()
    seed = MEDLINE.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.xml.gz"
        size = int(args.size_gib * (1 << 30))
        with big.open("wb") as f:
            for _ in range(size // len(seed)):
                f.write(seed)
            f.write(seed[: size % len(seed)])
        size, read_s = timed(read_all, big)
        _, hash_s = timed(content_hash, str(big))
        big.unlink()
        _, small_hash_s = timed(content_hash, str(MEDLINE))
        summary, split_s = timed(local.run, [str(MEDLINE)], RunConfig(out=str(Path(tmp) / "out")), False, False)
    print(json.dumps({
        "bytes": size,
        "read_seconds": round(read_s, 3),
        "read_gib_per_s": round(size / (1 << 30) / read_s, 2),
        "hash_seconds": round(hash_s, 3),
        "hash_gib_per_s": round(size / (1 << 30) / hash_s, 2),
        "pubmed_file": MEDLINE.name,
        "pubmed_hash_seconds": round(small_hash_s, 4),
        "pubmed_split_seconds": round(split_s, 3),
        "hash_share_of_split": round(small_hash_s / split_s, 4),
        "documents": int(summary.total("documents")),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
