"""The process's allocator: `bulkner run` and `eval` restart on tcmalloc where the system has it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bulkner import hardware
from bulkner.hardware import allocator_environment, fast_allocator, worker_environment

PROBE = ("from bulkner.hardware import with_fast_allocator, _memory_releaser, release_free_memory\n"
         "with_fast_allocator()\n"
         "release_free_memory()\n"
         "maps = open('/proc/self/maps').read()\n"
         "print('tcmalloc' in maps, getattr(_memory_releaser(), '__name__', 'malloc_trim'))\n")


def test_the_environment_preloads_tcmalloc_unless_told_not_to_or_an_allocator_is_there(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(hardware, "fast_allocator", lambda: "libtcmalloc_minimal.so.4")
    assert allocator_environment({"PATH": "/bin"}) == {"PATH": "/bin", "LD_PRELOAD": "libtcmalloc_minimal.so.4"}
    assert allocator_environment({"LD_PRELOAD": "/opt/libfoo.so"})["LD_PRELOAD"] == "libtcmalloc_minimal.so.4:/opt/libfoo.so"
    assert allocator_environment({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}) is None
    assert allocator_environment({"LD_PRELOAD": "libtcmalloc_minimal.so.4"}) is None  # the restarted process
    assert allocator_environment({"BULKNER_ALLOCATOR": "system"}) is None
    monkeypatch.setenv("BULKNER_ALLOCATOR", "system")
    assert worker_environment() == {}
    monkeypatch.delenv("BULKNER_ALLOCATOR")
    assert worker_environment() == {"LD_PRELOAD": "libtcmalloc_minimal.so.4"}
    monkeypatch.setattr(hardware, "fast_allocator", lambda: None)
    assert allocator_environment({}) is None and worker_environment() == {}


@pytest.mark.skipif(fast_allocator() is None, reason="no tcmalloc on this system (Debian/Ubuntu: apt install libtcmalloc-minimal4)")
def test_a_process_restarts_on_tcmalloc_once_and_gives_memory_back_through_it():
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "BULKNER_ALLOCATOR")}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "MallocExtension_ReleaseFreeMemory"]
    kept = subprocess.run([sys.executable, "-c", PROBE], env=env | {"BULKNER_ALLOCATOR": "system"}, capture_output=True, text=True,
                          check=True).stdout.split()
    assert kept == ["False", "malloc_trim"]
