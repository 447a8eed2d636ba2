"""The Ray runner: one actor per model replica, shards handed to whichever actor is free.

Each actor holds a ``ShardWorker`` (engine built once, in the actor) and pins the resources the
worker declares (``ShardWorker.resources``): a GPU, or a fraction of one, per replica. The output
directory must be reachable from every node: an object-store URL or a shared file system.
"""

from __future__ import annotations

import logging
from typing import Iterator, Sequence

from tqdm.auto import tqdm

from bulkner.config import RunConfig
from bulkner.connectors.fs import shard_name
from bulkner.runner.local import RunSummary
from bulkner.runner.shard import ShardReport, ShardWorker, finished, plan
from bulkner.writer import OutputDir

log = logging.getLogger(__name__)


class ShardActor:
    """The actor body: a ShardWorker and the output directory, built inside the actor."""

    def __init__(self, config: RunConfig, with_model: bool) -> None:
        self.worker = ShardWorker(config, with_model=with_model)
        self.out = OutputDir(config.out)

    def process(self, url: str) -> ShardReport:
        return self.worker.process(url, self.out)

    def shutdown(self) -> None:
        self.worker.teardown()


def import_ray():
    try:
        import ray
    except ImportError as err:
        raise RuntimeError("the Ray runner needs Ray: pip install 'bulkner[ray]'") from err
    return ray


def replica_count(resources: dict, cluster: dict, replicas: int | None) -> int:
    """Replicas to start: as asked, else as many as the cluster's GPUs (or CPUs) hold."""
    gpus, cpus = resources.get("num_gpus", 0), resources.get("num_cpus", 1)
    if gpus > cluster.get("GPU", 0):
        raise ValueError(f"each replica needs {gpus} GPU(s) but the Ray cluster has {cluster.get('GPU', 0)}")
    if replicas is not None:
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        return replicas
    fit = cluster.get("GPU", 0) / gpus if gpus else cluster.get("CPU", 1) / cpus
    return max(1, int(fit))


def run(
    inputs: Sequence[str],
    config: RunConfig,
    with_model: bool = True,
    replicas: int | None = None,
    address: str | None = None,
    progress: bool = True,
) -> RunSummary:
    """Process every shard on a Ray cluster (``address``; None starts or joins a local one)."""
    ray = import_ray()
    urls = plan(inputs, config.input)
    probe = ShardWorker(config, with_model=with_model)
    out = OutputDir(config.out)
    out.claim(probe.fingerprint)
    out.remove_orphans(shard_name(url) for url in urls)
    summary = RunSummary()
    todo = []
    for url in urls:  # changed inputs are redone (and said so) by the actor's ShardWorker.process
        try:
            marker, _ = finished(url, out)
        except OSError:  # the input vanished: the actor reports the shard failed
            marker = None
        if marker is None:
            todo.append(url)
        else:
            summary.reports.append(ShardReport(shard_name(url), "skipped", marker))
    if not todo:
        return summary
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=True)
    resources = probe.resources()
    count = min(len(todo), replica_count(resources, ray.cluster_resources(), replicas))
    log.info("starting %d replica(s), each with %s", count, resources)
    actor_class = ray.remote(ShardActor).options(**resources)
    actors = [actor_class.remote(config, with_model) for _ in range(count)]
    try:
        for report in tqdm(dispatch(ray, actors, todo), total=len(todo), desc="shards", unit="shard", disable=not progress):
            log.info("%s: %s", report.shard, report.status)
            summary.reports.append(report)
    finally:
        for actor in actors:
            try:
                ray.get(actor.shutdown.remote())
            except ray.exceptions.RayError:  # a dead actor has nothing left to release
                ray.kill(actor)
    return summary


def dispatch(ray, actors: list, urls: Sequence[str]) -> Iterator[ShardReport]:
    """Hand each shard to the next free actor. A task or actor failure fails that shard only (its
    report says why); a dead actor gets no more work; shards left when every actor is dead fail."""
    idle, queue, pending = list(actors), list(urls), {}
    while queue or pending:
        while idle and queue:
            actor, url = idle.pop(), queue.pop(0)
            pending[actor.process.remote(url)] = (actor, url)
        if not pending:
            for url in queue:
                yield ShardReport(shard_name(url), "failed", error="no live Ray actor left to process it")
            return
        [ref], _ = ray.wait(list(pending), num_returns=1)
        actor, url = pending.pop(ref)
        try:
            yield ray.get(ref)
            idle.append(actor)
        except ray.exceptions.RayActorError as err:
            yield ShardReport(shard_name(url), "failed", error=f"Ray actor died: {err}")
        except ray.exceptions.RayError as err:
            idle.append(actor)
            yield ShardReport(shard_name(url), "failed", error=f"{type(err).__name__}: {err}")
