"""The local runner: every shard in order, in this process, one engine for all of them."""

from __future__ import annotations

import logging
from typing import Sequence

from tqdm.auto import tqdm

from bulkner.config import RunConfig
from bulkner.pipeline.results import RunSummary
from bulkner.pipeline.shard import start_run

log = logging.getLogger(__name__)


def run(inputs: Sequence[str], config: RunConfig, with_model: bool = True, progress: bool = True) -> RunSummary:
    """Process every input shard into ``config.out``; failed shards are reported, not raised.

    Raises ``FingerprintMismatch`` before any work if ``config.out`` holds another configuration,
    ``OutputBusy`` if another run is writing to it.
    """
    summary = RunSummary()
    with start_run(inputs, config, with_model, progress) as (urls, worker, out):
        try:
            for url in tqdm(urls, desc="shards", unit="shard", disable=not progress):
                result = worker.process(url, out)
                log.info("%s: %s", result.shard, result.status)
                summary.shards.append(result)
        finally:
            worker.teardown()
    return summary
