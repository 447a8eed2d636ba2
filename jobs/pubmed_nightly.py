"""Ray job: the PubMed update files into the baseline's output directory, nightly.

    RAY_AUTH_MODE=token ray job submit --address http://localhost:8265 --working-dir . -- \\
        python jobs/pubmed_nightly.py s3://bucket/pubmed/updatefiles/ --out s3://bucket/bulkner/pubmed

Give the options the baseline ran with (the same fingerprint, or the run is refused). Update files
already done are skipped, new ones processed (a changed one redone); each file's deletions become
tombstones. Files are applied in numeric order by the reader: ``bulkner.read_table(out, table,
current=True)`` gives each article's last version and no deleted article (docs/cluster.md).
"""

import sys

from bulkner.cli import app

if __name__ == "__main__":
    app(["run", "--runner", "ray", *sys.argv[1:]])
