"""What the machine's CPU can do, read once from ``/proc/cpuinfo``: AVX2 decides whether vLLM's
CPU build runs, native bf16 decides training autocast and vLLM's dtype on CPU. Also the process's
memory allocator: ``bulkner run`` and ``eval`` restart themselves with tcmalloc where the system has
it (``with_fast_allocator``), and how the process gives freed memory back (``release_free_memory``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
import sys
from pathlib import Path
from typing import Mapping

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags under which bf16 matmuls run natively (measured here: training 2.2x, vLLM 1.3-2x over fp32)."""


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first CPU's ``key: value`` lines (empty where ``/proc/cpuinfo`` cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info.setdefault(key.strip(), value.strip())
    return info


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``)."""
    info = _cpuinfo()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def cpu_has_avx2() -> bool:
    """True when the CPU has AVX2, which vLLM's CPU build needs."""
    return "avx2" in cpu_flags()


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively; elsewhere bf16 is emulated and slower than fp32."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def cpu_model() -> str:
    """The CPU's model name, or the platform's word for it."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


ALLOCATOR_ENV = "BULKNER_ALLOCATOR"
"""``system`` keeps the C library's allocator (no restart with tcmalloc)."""
FAST_ALLOCATORS = ("tcmalloc_minimal", "tcmalloc")
"""Libraries ``with_fast_allocator`` preloads, the first found (Debian/Ubuntu: ``libtcmalloc-minimal4``).
Measured on the bench's shard (2 cores, bench/throughput.py): 54-57 sentences/s with glibc's
malloc, 64-67 with tcmalloc (generation -9%, span scoring -30%); Intel's OpenMP runtime, vLLM's
other recommended preload, changed nothing; glibc's mmap and trim thresholds raised did not help."""
PRELOADERS = ("tcmalloc", "jemalloc", "mimalloc")


@functools.lru_cache(maxsize=1)
def fast_allocator() -> str | None:
    """The soname of the system's tcmalloc (``FAST_ALLOCATORS``), or None where it has none."""
    if platform.system() != "Linux":
        return None
    return next((found for name in FAST_ALLOCATORS if (found := ctypes.util.find_library(name))), None)


def allocator_environment(env: Mapping[str, str]) -> dict[str, str] | None:
    """``env`` with tcmalloc preloaded (``LD_PRELOAD``), or None when nothing is to change: no
    tcmalloc on the system, ``BULKNER_ALLOCATOR=system``, or an allocator preloaded already."""
    preload = env.get("LD_PRELOAD", "")
    if env.get(ALLOCATOR_ENV) == "system" or any(name in preload for name in PRELOADERS):
        return None
    library = fast_allocator()
    if library is None:
        return None
    return {**env, "LD_PRELOAD": f"{library}:{preload}" if preload else library}


def worker_environment() -> dict[str, str]:
    """Environment variables a Ray worker that runs a model starts with: tcmalloc preloaded where
    the driver's system has it and ``BULKNER_ALLOCATOR`` is not ``system`` (a node without it
    starts the worker on its own allocator: the loader skips a preload it cannot find)."""
    env = allocator_environment({ALLOCATOR_ENV: os.environ.get(ALLOCATOR_ENV, "")})  # the driver's own preload aside
    return {} if env is None else {"LD_PRELOAD": env["LD_PRELOAD"]}


def with_fast_allocator() -> None:
    """Restart this process (same interpreter, same command line) with tcmalloc preloaded when
    :func:`allocator_environment` says so; returns where it does not. Call it first thing, before
    threads, open files or output that a restart would lose."""
    env = allocator_environment(os.environ)
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, env)


@functools.lru_cache(maxsize=1)
def _memory_releaser():
    """The allocator's "give free pages back" call: tcmalloc's ``MallocExtension_ReleaseFreeMemory``
    where it is loaded, else glibc's ``malloc_trim(0)``; None where there is neither (musl, macOS, Windows)."""
    try:
        process = ctypes.CDLL(None)
    except (OSError, TypeError):
        return None
    release = getattr(process, "MallocExtension_ReleaseFreeMemory", None)
    if release is not None:
        return release
    trim = getattr(process, "malloc_trim", None)
    return None if trim is None else functools.partial(trim, 0)


def release_free_memory() -> None:
    """Give the pages the C heap holds free back to the system (glibc ``malloc_trim``, tcmalloc's
    ``ReleaseFreeMemory``).

    A large record's parse tree is many small allocations; once freed, its pages stay with the
    heap of the thread that parsed it, and each thread has a heap of its own, so a shard read in one
    thread and written in another would hold a big record's memory once per thread. Called after
    each chunk is read and written; a no-op where the C library cannot do it.
    """
    release = _memory_releaser()
    if release is not None:
        release()
