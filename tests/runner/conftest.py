import pytest


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs, no dashboard) for every Ray test of the session."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'bulkner[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
