"""Keep freed memory in the process while training on a CPU (glibc's ``mallopt``).

A training step allocates and frees the same tens of MiB again and again: the full-softmax
kernel's ``exp`` blocks (about 2 MiB each, tens of them a step), the layers' activations and
their gradients, the embedding gradient. oneDNN's products return tensors of their own, so
unlike ``torch.mm`` they cannot write into a buffer kept from the last step. By default glibc
serves large requests with ``mmap`` and gives memory back to the kernel when it is freed, so
the next step touches fresh pages and faults on every one of them; how large "large" is it
adjusts as it goes, which makes one shape fast and its neighbour slow (a ``[750, 256] x [256,
699]`` product, whose 2,097,000-byte result falls under the threshold, ran at 142-190 GFLOP/s
against 390-430 for 700 items). Measured on this project's VM, Beauty SASRec epochs, each
setting in its own process, alternated: d 64 about 7.0 s -> 5.8 s, d 256 about 15.6 s -> 14.6 s,
page faults of the runs down from 0.6-1.6 M to about 0.3 M (the first touch of the memory the
run holds anyway), the same peak resident memory.

:func:`keep_freed_memory` sets the two thresholds once per process: requests up to 32 MiB
(glibc's largest allowed threshold) come from the heap, and up to 512 MiB of freed heap stays
mapped. It cannot be undone for the process and can leave that much more memory held by a
process that trained; ``SEQREC_KEEP_HEAP=0`` in the environment leaves glibc's defaults. On a
C library other than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

# mallopt's parameter numbers (glibc malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc refuses more (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 512 << 20

_state: str | None = None  # what holds in this process, once asked


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        return libc if hasattr(libc, "mallopt") else None
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> str:
    """Raise glibc's mmap and trim thresholds for this process (once; later calls repeat the
    answer). Returns what holds now, for the record: e.g. ``glibc mmap 32 MiB, trim 512 MiB``,
    or ``default`` where nothing was changed (switched off, another C library, or refused)."""
    global _state
    if _state is None:
        _state = _set_thresholds()
    return _state


def _set_thresholds() -> str:
    if os.environ.get("SEQREC_KEEP_HEAP", "1") == "0":
        return "default"
    libc = _glibc()
    if libc is None:
        return "default"
    if not (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        log.warning("glibc refused mallopt: freed memory goes back to the system as usual")
        return "default"
    return f"glibc mmap {MMAP_THRESHOLD >> 20} MiB, trim {TRIM_THRESHOLD >> 20} MiB"
