"""The Ray runner: one actor per model replica, shards handed to whichever replica is free.

Each replica runs a shard as the local runner does (``pipeline.shard``): read/segment/prompt,
generate and parse/select/write in three threads joined by bounded queues, so its engine is fed
continuously. Why actors rather than Ray Data, measured: ``docs/pipeline.md``.

Replicas. Each actor pins the resources of one replica (``replica_resources``: a GPU, a fraction of
one, or CPUs only) and builds its engine in its constructor, so a replica that cannot start fails
at once; when no replica can start, the run stops with that reason, said once. Ray restarts a
crashed replica (``RayConfig.max_restarts``); the shard it held is requeued and started again, up
to ``RayConfig.max_attempts`` times, then it fails with the reason. A shard running past
``RayConfig.shard_timeout_s`` has its replica killed (and restarted) and is requeued. Replicas are
added while the run goes on when nodes join the cluster. The run ends with every shard done,
skipped or failed with a reason.

On a joined cluster (``ray job submit``, ``--ray-address``) that lacks the GPUs a replica needs,
the driver asks the autoscaler for them (``ray.autoscaler.sdk.request_resources``) and waits up to
``RayConfig.resources_timeout_s``. The output directory must be reachable from every node: an
object-store URL or a shared file system.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

from tqdm.auto import tqdm

from bulkner.config import RayConfig, RunConfig
from bulkner.connectors.fs import shard_name
from bulkner.hardware import worker_environment
from bulkner.outputs.writer import OutputDir
from bulkner.pipeline.results import RunSummary, ShardResult
from bulkner.pipeline.shard import ShardCollision, ShardWorker, finished, start_run

log = logging.getLogger(__name__)

POLL_S = 5.0
"""How often the driver looks at timeouts and at the cluster's size while waiting."""


class ShardActor:
    """The actor body: a ShardWorker with its engine built, and the output directory."""

    def __init__(self, config: RunConfig, with_model: bool) -> None:
        self.worker = ShardWorker(config, with_model=with_model)
        self.worker.setup()  # here, not in the first shard: a replica that cannot start fails at once
        self.out = OutputDir(config.out)

    def ready(self) -> int:
        """The actor's process id, once its engine is built."""
        return os.getpid()

    def process(self, url: str) -> ShardResult:
        return self.worker.process(url, self.out)

    def shutdown(self) -> None:
        self.worker.teardown()


def import_ray():
    try:
        import ray
    except ImportError as err:
        raise RuntimeError("the Ray runner needs Ray: pip install 'bulkner[ray]'") from err
    return ray


def replica_resources(config: RunConfig, with_model: bool, cluster: dict, node_cpus: Sequence[float] = (),
                      replicas: int | None = None) -> dict:
    """What one replica pins: ``gpus_per_replica`` GPUs (None: 1 where the cluster has GPUs, else
    0) and one CPU; no GPU without a model. A CPU replica pins every CPU of the largest node
    (``node_cpus``; an equal share when more ``replicas`` are asked than there are nodes): vLLM's
    CPU build uses every thread it is given, two replicas on one node would only compete, and with
    the local runner's thread count it gives the local runner's outputs."""
    gpus = config.engine.gpus_per_replica if with_model else 0
    if gpus is None:
        gpus = 1 if cluster.get("GPU", 0) > 0 else 0
    if gpus or not with_model:
        return {"num_cpus": 1, "num_gpus": gpus}
    nodes = [n for n in node_cpus if n > 0] or [cluster.get("CPU", 1)]
    per_node = -(-replicas // len(nodes)) if replicas else 1
    return {"num_cpus": max(1, int(max(nodes)) // per_node), "num_gpus": 0}


def replica_config(config: RunConfig, gpus: float) -> RunConfig:
    """``config`` as one replica runs it: vLLM's memory share scaled to the replica's GPU fraction,
    so several replicas fit on one GPU."""
    engine = config.engine
    share = engine.gpu_memory_utilization * gpus if 0 < gpus < 1 else engine.gpu_memory_utilization
    return replace(config, engine=replace(engine, gpus_per_replica=gpus, gpu_memory_utilization=share))


def replica_count(resources: dict, cluster: dict, replicas: int | None) -> int:
    """Replicas to start: as asked, else as many as the cluster's GPUs (or CPUs) hold."""
    gpus, cpus = resources.get("num_gpus", 0), resources.get("num_cpus", 1)
    if gpus > cluster.get("GPU", 0):
        raise ValueError(f"each replica needs {gpus} GPU(s) but the Ray cluster has {cluster.get('GPU', 0)}; "
                         "run on CPUs with --gpus-per-replica 0")
    if replicas is not None:
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        return replicas
    fit = cluster.get("GPU", 0) / gpus if gpus else cluster.get("CPU", 1) / cpus
    return max(1, int(fit))


def wait_for_resources(ray, resources: dict, wanted: int, timeout_s: float) -> dict:
    """The cluster's resources once it holds one replica's GPUs: asks the autoscaler for ``wanted``
    replicas' worth and waits up to ``timeout_s``; raises ``RuntimeError`` when none came."""
    cluster = ray.cluster_resources()
    gpus = resources["num_gpus"]
    if gpus <= cluster.get("GPU", 0):
        return cluster
    try:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[{"GPU": gpus, "CPU": resources["num_cpus"]}] * wanted)
    except Exception as err:  # no autoscaler API in this Ray: wait all the same
        log.debug("request_resources failed: %s", err)
    log.warning("the Ray cluster has %s GPU(s), each replica needs %s: asked the autoscaler for %d replica(s), "
                "waiting up to %d s", cluster.get("GPU", 0), gpus, wanted, timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        cluster = ray.cluster_resources()
        if gpus <= cluster.get("GPU", 0):
            return cluster
    raise RuntimeError(f"the Ray cluster still has {cluster.get('GPU', 0)} GPU(s) after {timeout_s:.0f} s; each replica "
                       f"needs {gpus}: start GPU nodes (cluster.yaml: min_workers) or run on CPUs with "
                       "--gpus-per-replica 0")


def run(
    inputs: Sequence[str],
    config: RunConfig,
    with_model: bool = True,
    ray_config: RayConfig = RayConfig(),
    progress: bool = True,
) -> RunSummary:
    """Process every shard on a Ray cluster; failed shards are reported, not raised.

    Raises ``RuntimeError`` when no replica can start (the reason of the first one that failed) or
    the cluster never gets the GPUs a replica needs.
    """
    ray = import_ray()
    with start_run(inputs, config, with_model) as (urls, _, out):  # the replicas build their own workers
        return _run(ray, urls, out, config, with_model, ray_config, progress)


def _run(ray, urls: list[str], out: OutputDir, config: RunConfig, with_model: bool, ray_config: RayConfig,
         progress: bool) -> RunSummary:
    """``run`` once the output directory is claimed and locked."""
    summary = RunSummary()
    todo = []
    for url in urls:  # changed inputs are redone (and said so) by the actor's ShardWorker.process
        try:
            marker, _, _ = finished(url, out)
        except OSError:  # the input vanished: the actor reports the shard failed
            marker = None
        except ShardCollision as err:
            summary.shards.append(ShardResult(shard_name(url), "failed", error=f"{type(err).__name__}: {err}"))
            continue
        if marker is None:
            todo.append(url)
        else:
            summary.shards.append(ShardResult(shard_name(url), "skipped", marker))
    if not todo:
        return summary
    joined = bool(ray_config.address or os.environ.get("RAY_ADDRESS"))
    if not ray.is_initialized():
        ray.init(address=ray_config.address, log_to_driver=True)
    cluster = ray.cluster_resources()
    node_cpus = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")]
    resources = replica_resources(config, with_model, cluster, node_cpus, ray_config.replicas)
    if joined and ray_config.resources_timeout_s:
        cluster = wait_for_resources(ray, resources, ray_config.replicas or 1, ray_config.resources_timeout_s)
    replica_count(resources, cluster, ray_config.replicas)  # raises when a replica cannot fit at all

    def target() -> int:
        """Replicas wanted now: as asked, else as many as the cluster holds (it may have grown)."""
        return replica_count(resources, ray.cluster_resources(), ray_config.replicas)

    env = worker_environment() if with_model else {}
    actor_class = ray.remote(ShardActor).options(max_restarts=ray_config.max_restarts, max_task_retries=0, **resources,
                                                 **({"runtime_env": {"env_vars": env}} if env else {}))
    pool = ReplicaPool(ray, lambda: actor_class.remote(replica_config(config, resources["num_gpus"]), with_model),
                       target, ray_config)
    log.info("starting up to %d replica(s), each with %s", min(len(todo), target()), resources)
    bar = tqdm(total=len(todo), desc="shards", unit="shard", disable=not progress)
    sentences, started = 0, time.perf_counter()
    try:
        for result in pool.dispatch(todo):
            log.info("%s: %s", result.shard, result.status)
            summary.shards.append(result)
            sentences += result.stats.get("sentences", 0) if result.status == "done" else 0
            bar.set_postfix(sentences=sentences, rate=f"{sentences / (time.perf_counter() - started):.1f}/s", refresh=False)
            bar.update()
    finally:
        bar.close()
        pool.shutdown()
    summary.replicas = pool.metrics()
    return summary


@dataclass
class Replica:
    """One actor and what it did."""

    index: int
    actor: object
    pid: int | None = None
    shards: int = 0
    sentences: int = 0
    seconds: float = 0.0
    restarts: int = 0

    def metrics(self) -> dict:
        rate = round(self.sentences / self.seconds, 2) if self.seconds else None
        return {"replica": self.index, "shards": self.shards, "sentences": self.sentences,
                "seconds": round(self.seconds, 2), "sentences_per_second": rate, "restarts": self.restarts}


@dataclass
class ReplicaPool:
    """Replicas being started, idle or busy, and the shards waiting for them (``dispatch``)."""

    ray: object
    new_actor: object
    """``() -> actor handle``: starts one replica."""
    target: object
    """``() -> int``: how many replicas are wanted now."""
    config: RayConfig
    replicas: list[Replica] = field(default_factory=list)
    starting: dict = field(default_factory=dict)
    """``ready`` ref → (replica, since): constructors (or restarts) not yet finished."""
    busy: dict = field(default_factory=dict)
    """``process`` ref → (replica, url, since)."""
    idle: list[Replica] = field(default_factory=list)
    start_errors: list[str] = field(default_factory=list)
    failed_starts: int = 0
    """Replicas whose engine never came up (not replaced: the next one would most likely fail too)."""
    ever_ready: bool = False

    def _start(self, count: int) -> None:
        for _ in range(count):
            replica = Replica(len(self.replicas), self.new_actor())
            self.replicas.append(replica)
            self._await_ready(replica)

    def _await_ready(self, replica: Replica) -> None:
        """Ask ``replica`` whether its engine is (again) built; retried while Ray restarts it."""
        ref = replica.actor.ready.options(max_task_retries=-1).remote()
        self.starting[ref] = (replica, time.monotonic())

    def _grow(self, waiting: int) -> None:
        """Start replicas up to what the cluster holds now (it may have grown) and the work left
        needs; a replica that failed to start counts as one (it is not started again and again)."""
        live = len(self.idle) + len(self.busy) + len(self.starting)
        try:
            wanted = min(self.target(), live + waiting)
        except ValueError:  # the cluster lost the GPUs a replica needs: keep what runs
            return
        have = live + self.failed_starts
        if wanted > have:
            if self.replicas:
                log.info("starting %d more replica(s)", wanted - have)
            self._start(wanted - have)

    def dispatch(self, urls: Sequence[str]) -> Iterator[ShardResult]:
        """Every shard of ``urls`` once: done, or failed with a reason. A shard whose replica died
        is requeued (first in line) until it has been started ``max_attempts`` times."""
        ray, queue, attempts = self.ray, deque(urls), Counter()
        self._grow(len(queue))
        last_grow = time.monotonic()
        while queue or self.busy:
            while self.idle and queue:
                replica, url = self.idle.pop(), queue.popleft()
                attempts[url] += 1
                self.busy[replica.actor.process.remote(url)] = (replica, url, time.monotonic())
            if not self.busy and not self.starting:
                if not self.ever_ready:
                    raise RuntimeError(f"no replica could start: {self.start_errors[0] if self.start_errors else 'unknown'}")
                reason = self.start_errors[-1] if self.start_errors else "every replica died"
                for url in queue:
                    yield ShardResult(shard_name(url), "failed", error=f"no live replica left ({reason})")
                return
            done, _ = ray.wait([*self.busy, *self.starting], num_returns=1, timeout=POLL_S)
            for ref in done:
                if ref in self.starting:
                    self._started(ref)
                    continue
                replica, url, since = self.busy.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError as err:  # the replica died (crash, OOM, node, timeout)
                    replica.restarts += 1
                    self._await_ready(replica)  # back after Ray restarts it, or given up
                    if attempts[url] >= self.config.max_attempts:
                        yield ShardResult(shard_name(url), "failed",
                                          error=f"its replica died in each of {attempts[url]} attempts; last: {short(err)}")
                    else:
                        log.warning("shard %s: its replica died (%s); requeued (attempt %d of %d)", shard_name(url),
                                    short(err), attempts[url] + 1, self.config.max_attempts)
                        queue.appendleft(url)
                except ray.exceptions.RayError as err:  # the task failed but the replica lives
                    self.idle.append(replica)
                    yield ShardResult(shard_name(url), "failed", error=f"{type(err).__name__}: {short(err)}")
                else:
                    self.idle.append(replica)
                    if result.status == "done":
                        replica.shards += 1
                        replica.sentences += result.stats.get("sentences", 0)
                        replica.seconds += result.stats.get("seconds", 0.0)
                    yield result
            self._expire()
            if queue and time.monotonic() - last_grow >= POLL_S:
                self._grow(len(queue))
                last_grow = time.monotonic()

    def _started(self, ref) -> None:
        replica, _ = self.starting.pop(ref)
        try:
            replica.pid = self.ray.get(ref)
        except self.ray.exceptions.RayError as err:  # the constructor failed, or no restarts are left
            self.failed_starts += replica.pid is None
            reason = short(err)
            if reason not in self.start_errors:
                log.error("replica %d could not start: %s", replica.index, reason)
                self.start_errors.append(reason)
            self.ray.kill(replica.actor, no_restart=True)
            return
        self.ever_ready = True
        self.idle.append(replica)

    def _expire(self) -> None:
        """Kill (for a restart) the replicas of shards past their timeout; give up replicas that
        do not start in time."""
        now = time.monotonic()
        for ref, (replica, url, since) in list(self.busy.items()):
            if self.config.shard_timeout_s and now - since > self.config.shard_timeout_s:
                log.warning("shard %s: no result after %.0f s; restarting its replica", shard_name(url), now - since)
                self.busy[ref] = (replica, url, float("inf"))  # killed once; its task now fails as a death
                self.ray.kill(replica.actor, no_restart=False)
        for ref, (replica, since) in list(self.starting.items()):
            if self.config.start_timeout_s and now - since > self.config.start_timeout_s:
                del self.starting[ref]
                self.failed_starts += replica.pid is None
                self.start_errors.append(f"replica {replica.index} did not start within {self.config.start_timeout_s:.0f} s")
                self.ray.kill(replica.actor, no_restart=True)

    def shutdown(self) -> None:
        for replica in self.replicas:
            try:
                self.ray.get(replica.actor.shutdown.remote(), timeout=60)
            except Exception:  # a dead or stuck replica has nothing left to release
                self.ray.kill(replica.actor, no_restart=True)

    def metrics(self) -> list[dict]:
        return [r.metrics() for r in self.replicas]


def short(err: Exception) -> str:
    """The last meaningful line of a Ray error (its cause), not the whole traceback."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    causes = [line for line in lines if not line.startswith(("File ", "Traceback", "^", "~"))]
    return (causes or lines or [type(err).__name__])[-1][:500]
