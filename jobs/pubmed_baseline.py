"""Ray job: the PubMed baseline (or any set of input files) into entity tables, once.

    RAY_AUTH_MODE=token ray job submit --address http://localhost:8265 --working-dir . -- \\
        python jobs/pubmed_baseline.py s3://bucket/pubmed/baseline/ --out s3://bucket/bulkner/pubmed

The driver asks the autoscaler for the GPUs its replicas need and waits for them; replicas are
added as GPU nodes join; a replica that dies is restarted and its shard requeued. Every option of
``bulkner run`` applies (``--replicas``, ``--gpus-per-replica 0.25`` to pack four small-model
replicas on each GPU, ``--max-attempts``, ``--shard-timeout``, ``--model``, ``--types``...); the
exit code is ``bulkner run``'s. Resubmitting skips finished shards. See docs/cluster.md.
"""

import sys

from bulkner.cli import app

if __name__ == "__main__":
    app(["run", "--runner", "ray", *sys.argv[1:]])
