"""jobs/pubmed_baseline.py as docs/cluster.md tells users to run it: ``ray job submit`` to a Ray head
(here a local one, started with ``ray start --head``) over a real PubMed file, default model."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pytest
from lxml import etree

import bulkner

REPO = Path(__file__).resolve().parents[2]
PUBMED = REPO.parent / "shared" / "data" / "pubmed" / "test_current_medline.xml.gz"
"""A real MEDLINE file of 4 citations (3 with an abstract): small enough for the default model on CPUs."""
JOB_TIMEOUT_S = 600


def citations(path: Path) -> set[str]:
    """The doc ids of the citations of a PubMed XML file."""
    with gzip.open(path) as stream:
        root = etree.parse(stream).getroot()
    return {f"pmid:{pmid}" for pmid in root.xpath("//MedlineCitation/PMID/text()")}


def submit(head, out: Path, auth: bool) -> subprocess.CompletedProcess:
    """docs/cluster.md's command, from the repository root, with the token when ``auth``."""
    env = {**head.env, "RAY_AUTH_MODE": "token"} if auth else head.env
    command = ["ray", "job", "submit", "--address", head.address, "--working-dir", ".", "--",
               "python", "jobs/pubmed_baseline.py", str(PUBMED), "--out", str(out), "--types", "Chemical,Disease"]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=JOB_TIMEOUT_S)


@pytest.mark.slow
def test_ray_job_submit_writes_the_tables(ray_head, tmp_path):
    """The job succeeds (with the token where the head demands one; refused without it), marks
    the shard done, and its tables hold every citation and entities whose text is at their offsets."""
    if not PUBMED.exists():
        pytest.skip(f"shared data missing: {PUBMED}")
    out = tmp_path / "out"
    if ray_head.token_auth:  # what a user of Ray 2.5x meets first (docs/cluster.md says so)
        refused = submit(ray_head, out, auth=False)
        assert refused.returncode != 0 and "Authentication required" in refused.stdout + refused.stderr
    job = submit(ray_head, out, auth=ray_head.token_auth)
    log = job.stdout + job.stderr
    assert job.returncode == 0 and "succeeded" in log, log[-6000:]

    [marker] = (out / "_done").glob("*.json")  # the completion marker, written last
    stats = json.loads(marker.read_text())
    assert marker.stem == stats["shard"] == "test_current_medline" and stats["documents"] == len(citations(PUBMED))
    documents = bulkner.read_table(str(out), "documents").to_pylist()
    assert {d["doc_id"] for d in documents} == citations(PUBMED)
    entities = bulkner.read_table(str(out), "entities").to_pylist()
    assert entities, "no entity in 4 citations"
    assert sum(stats["entities_by_type"].values()) == len(entities)
    texts = {(d["doc_id"], d["passage_index"]): d["text"] for d in documents}
    for entity in entities:
        assert entity["type"] in {"Chemical", "Disease"}
        assert texts[entity["doc_id"], entity["passage_index"]][entity["start"]:entity["end"]] == entity["text"], entity
    assert bulkner.read_table(str(out), "rejects").num_rows == 0
