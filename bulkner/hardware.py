"""What the machine's CPU can do, read once from ``/proc/cpuinfo``: AVX2 decides whether vLLM's
CPU build runs, native bf16 decides training autocast and vLLM's dtype on CPU. Also how the
process gives freed memory back to the system (``release_free_memory``)."""

from __future__ import annotations

import ctypes
import functools
import platform
from pathlib import Path

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


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS, Windows)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


def release_free_memory() -> None:
    """Give the pages the C heap holds free back to the system (glibc ``malloc_trim``).

    A large record's parse tree is many small allocations; once freed, its pages stay with the
    heap of the thread that parsed it, and each thread has a heap of its own, so a shard read in one
    thread and written in another would hold a big record's memory once per thread. Called after
    each chunk is read and written; a no-op where the C library cannot do it.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
