"""Ray job: PubMed baseline or nightly update files into entity tables.

Full baseline (once)::

    ray job submit --working-dir . -- python jobs/pubmed.py \\
        s3://bucket/pubmed/baseline/ --out s3://bucket/bulkner/pubmed --types Chemical,Disease

Nightly update: the same command over the update files, into the same output. Shards already done
(same fingerprint) are skipped, new update files are processed; update files are taken in numeric
order and their tombstones record deletions::

    ray job submit --working-dir . -- python jobs/pubmed.py \\
        s3://bucket/pubmed/updatefiles/ --out s3://bucket/bulkner/pubmed --types Chemical,Disease

Every option of ``bulkner run`` applies (``--replicas``, ``--gpus-per-replica 0.25`` to pack four
small-model replicas on each GPU, ``--model``, ``--adapter``...). The exit code is ``bulkner run``'s.
"""

import sys

from bulkner.cli import app

if __name__ == "__main__":
    app(["run", "--runner", "ray", *sys.argv[1:]])
