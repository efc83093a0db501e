"""Freed memory kept in the process while training on a CPU (seqrec.train.heap).

Each check runs in a fresh interpreter: the thresholds hold for a whole process once set."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# a training step's pattern: tens of 2 MiB blocks held, then freed, again and again; prints the
# page faults of the last five rounds and what keep_freed_memory said
SCRIPT = """
import resource, torch
import seqrec.matmul  # as training imports it (its oneDNN check allocates on import)
from seqrec.train.heap import keep_freed_memory
said = keep_freed_memory() if KEEP else "not called"
def rounds():
    for _ in range(5):
        held = [torch.empty(1 << 19).fill_(1.0) for _ in range(20)]
        del held
rounds()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds()
print(said, "|", resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0, "|", keep_freed_memory())
"""
PAGES = 5 * 20 * (1 << 19) * 4 // 4096  # the pages the measured rounds touch


def run(keep: bool, **env: str) -> tuple[str, int, str]:
    out = subprocess.run([sys.executable, "-c", f"KEEP = {keep}\n" + SCRIPT], capture_output=True,
                         text=True, check=True, env={**os.environ, **env}).stdout.strip().splitlines()[-1]
    said, faults, again = (p.strip() for p in out.split("|"))
    return said, int(faults), again


glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
                           reason="mallopt is glibc's")


@glibc
def test_kept_memory_is_reused_without_page_faults():
    said, faults, again = run(True)
    assert said == again == "glibc mmap 32 MiB, trim 512 MiB"  # and asked again, the same answer
    # glibc's defaults, run only to say in a failure's message whether they fault as well
    default_faults = run(False)[1] if faults >= 0.05 * PAGES else None
    assert faults < 0.05 * PAGES, (faults, default_faults, PAGES)


@glibc
def test_switched_off_by_the_environment():
    said, _, again = run(True, SEQREC_KEEP_HEAP="0")
    assert said == again == "default"
