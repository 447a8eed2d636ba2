"""The Ray runner on a local Ray instance: same outputs as the local runner, shards in parallel."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bulkner.config import EngineConfig, RayConfig, RunConfig
from bulkner.runner import local
from bulkner.runner.ray import replica_config, replica_count, replica_resources

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'bulkner[ray]')")
PMPARSER = Path(__file__).resolve().parents[3] / "shared" / "data" / "pubmed" / "pmparser"


def tables(out: Path, table: str) -> dict:
    return {p.stem: pq.read_table(p).to_pylist() for p in sorted((out / table).glob("*.parquet"))}


def test_replica_count_reads_declared_resources():
    assert replica_count({"num_gpus": 1, "num_cpus": 1}, {"GPU": 8, "CPU": 64}, None) == 8
    assert replica_count({"num_gpus": 0.25, "num_cpus": 1}, {"GPU": 2, "CPU": 64}, None) == 8
    assert replica_count({"num_gpus": 0, "num_cpus": 1}, {"CPU": 3}, None) == 3
    with pytest.raises(ValueError, match="GPU"):
        replica_count({"num_gpus": 1}, {"CPU": 4}, None)


def test_replicas_default_to_a_gpu_where_there_are_gpus_and_to_cpus_elsewhere():
    default = RunConfig(out="o")
    assert replica_resources(default, True, {"CPU": 2}) == {"num_cpus": 2, "num_gpus": 0}  # a whole node
    assert replica_resources(default, True, {"CPU": 40}, [8, 32]) == {"num_cpus": 32, "num_gpus": 0}
    assert replica_resources(default, True, {"CPU": 32}, [16, 16], replicas=4)["num_cpus"] == 8  # two per node
    assert replica_resources(default, True, {"CPU": 2}, [2], replicas=3)["num_cpus"] == 1
    assert replica_resources(default, False, {"CPU": 2}, [2]) == {"num_cpus": 1, "num_gpus": 0}  # split: one each
    assert replica_resources(default, True, {"CPU": 64, "GPU": 8}) == {"num_cpus": 1, "num_gpus": 1}
    assert replica_resources(default, False, {"CPU": 64, "GPU": 8})["num_gpus"] == 0  # split needs no GPU
    quarter = RunConfig(out="o", engine=EngineConfig(gpus_per_replica=0.25, gpu_memory_utilization=0.8))
    assert replica_resources(quarter, True, {"GPU": 1})["num_gpus"] == 0.25
    assert replica_config(quarter, 0.25).engine.gpu_memory_utilization == pytest.approx(0.2)  # four fit on one GPU
    assert replica_config(default, 1).engine.gpu_memory_utilization == 0.85
    with pytest.raises(ValueError, match="replicas"):
        RayConfig(replicas=0)


def test_ray_split_matches_local(tmp_path, ray_local):
    if not PMPARSER.exists():
        pytest.skip("shared data missing")
    from bulkner.runner.ray import run

    inputs = [str(PMPARSER / "updatefiles")]
    ray_summary = run(inputs, RunConfig(out=str(tmp_path / "ray")), with_model=False, progress=False)
    local_summary = local.run(inputs, RunConfig(out=str(tmp_path / "local")), with_model=False, progress=False)
    assert ray_summary.count("done") == local_summary.count("done") == 6
    for table in ("documents", "sentences", "tombstones"):
        assert tables(tmp_path / "ray", table) == tables(tmp_path / "local", table)
    again = run(inputs, RunConfig(out=str(tmp_path / "ray")), with_model=False, progress=False)
    assert again.count("skipped") == 6


def test_ray_run_with_model_on_cpu(tmp_path, ray_local, tiny_model_dir):
    from bulkner.cli import sample_input
    from bulkner.runner.ray import run

    engine = EngineConfig(name="transformers", model=tiny_model_dir, max_model_len=1024)  # no GPU here: CPU replicas
    summary = run([sample_input()], RunConfig(out=str(tmp_path), types=("Chemical", "Disease"), engine=engine), ray_config=RayConfig(replicas=1),
                  progress=False)
    assert summary.count("done") == 1, summary.shards
    assert summary.total("prompts") == summary.total("sentences") > 0
    [replica] = summary.as_dict()["replicas"]
    assert replica["shards"] == 1 and replica["sentences"] == summary.total("sentences") and replica["restarts"] == 0


def test_a_failing_shard_fails_alone(tmp_path, ray_local):
    from bulkner.cli import sample_input
    from bulkner.runner.ray import run

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "in" / "good.xml.gz").write_bytes(Path(sample_input()).read_bytes())
    summary = run([str(tmp_path / "in")], RunConfig(out=str(tmp_path / "out")), with_model=False, progress=False)
    assert {r.shard: r.status for r in summary.shards} == {"bad": "failed", "good": "done"}


def test_a_replica_that_cannot_start_stops_the_run_with_its_reason(tmp_path, ray_local):
    from bulkner.cli import sample_input
    from bulkner.runner.ray import run

    engine = EngineConfig(name="transformers", model=str(tmp_path / "no-such-model"))
    with pytest.raises(RuntimeError, match="no replica could start: .*no-such-model"):
        run([sample_input()], RunConfig(out=str(tmp_path / "o"), engine=engine), ray_config=RayConfig(replicas=2),
            progress=False)


def test_a_changed_input_is_redone(tmp_path, ray_local):
    import gzip

    from bulkner.cli import sample_input
    from bulkner.runner.ray import run

    sample = gzip.decompress(Path(sample_input()).read_bytes())
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cut.xml").write_bytes(sample[: sample.rindex(b"<PubmedArticle>") + 200])
    (tmp_path / "in" / "whole.xml").write_bytes(sample)
    config = RunConfig(out=str(tmp_path / "out"))
    run([str(tmp_path / "in")], config, with_model=False, progress=False)
    (tmp_path / "in" / "cut.xml").write_bytes(sample)
    again = run([str(tmp_path / "in")], config, with_model=False, progress=False)
    assert {r.shard: r.status for r in again.shards} == {"cut": "done", "whole": "skipped"}
    assert again.as_dict()["redone_changed"] == 1
    assert len(set(pq.read_table(tmp_path / "out" / "documents" / "cut.parquet").column("doc_id").to_pylist())) == 4
