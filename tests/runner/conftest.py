from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs, no dashboard) for every Ray test of the session."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'bulkner[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@dataclass
class RayHead:
    """A Ray head started as a user starts one (``ray start --head``), and that user's shell."""

    address: str
    """The dashboard's HTTP address, where ``ray job submit`` sends jobs."""
    env: dict
    """The shell's environment: this venv's ``python`` and ``ray`` first on PATH, HOME a temporary
    directory (Ray keeps its token in ``~/.ray/auth_token``), no RAY_* variable of this process."""
    token_auth: bool
    """Whether the head demands a token: Ray 2.5x turns token authentication on in ``ray start``
    when ``~/.ray/auth_token`` exists, which ``ray get-auth-token --generate`` (or any local
    ``ray.init()``) writes."""
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session_processes(sid: int) -> list[int]:
    """Process ids of the session ``sid`` (a ``ray start`` run with ``start_new_session``: the
    Ray processes it started, workers included)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[3]) == sid:
            found.append(int(stat.parent.name))
    return found


@pytest.fixture
def ray_head(tmp_path: Path):
    """A local Ray head of 2 CPUs on free ports, with its own temp dir and a generated auth token;
    stopped (its whole process session) at teardown, whatever the test did. Skips where Ray
    cannot start. The temp dir is a short one of the system's (Ray's socket paths must stay under
    108 bytes), not under ``tmp_path``."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'bulkner[ray]')")
    if not Path("/proc/self/stat").exists():
        pytest.skip("stopping a Ray head cleanly needs /proc (Linux)")
    bin_dir = Path(sys.executable).parent
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    ray_cli = str(bin_dir / "ray")
    token_auth = subprocess.run([ray_cli, "get-auth-token", "--generate"], env=env, capture_output=True,
                                timeout=120).returncode == 0  # False on a Ray without token authentication
    dashboard, log = free_port(), tmp_path / "ray-start.log"
    ray_temp = Path(tempfile.mkdtemp(prefix="ray-"))
    command = [ray_cli, "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0",
               "--temp-dir", str(ray_temp), "--disable-usage-stats",
               "--port", str(free_port()), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
               "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port())]
    with log.open("w") as sink:
        head = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        address = f"http://127.0.0.1:{dashboard}"
        wait_for_dashboard(address, head, log)
        yield RayHead(address, env, token_auth, log)
    finally:
        stop_session(head)
        shutil.rmtree(ray_temp, ignore_errors=True)


def wait_for_dashboard(address: str, head: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    """Return once the dashboard answers HTTP (any status: it may demand a token); skip when
    ``ray start`` exits first or nothing answers in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.skip(f"Ray cannot start here (ray start exited {head.returncode}): {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"{address}/api/version", timeout=5).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(1)
    pytest.skip(f"Ray cannot start here: no dashboard at {address} after {timeout_s:.0f} s: {log.read_text()[-2000:]}")


def stop_session(head: subprocess.Popen) -> None:
    """Stop ``ray start --block`` (SIGTERM: it stops what it started), then kill whatever of its
    session is left. Never ``ray stop``: that stops every Ray of the machine."""
    if head.poll() is None:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    for pid in session_processes(head.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if head.poll() is None:
        head.wait(timeout=10)
