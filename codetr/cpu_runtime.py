"""Process-wide CPU settings that codetr's tools apply at start-up.

Two settings, each with an environment variable:

* **Lean allocator**, opt-in (``CODETR_LEAN_MALLOC=1``; ``CODETR_LEAN_MALLOC=thp`` adds
  torch's transparent huge pages). glibc's malloc raises its mmap threshold (up to 32 MB)
  every time a large block is freed, after which freed activations of a training step stay
  in the heap: the peak RSS grows by hundreds of MB over the live tensors.
  ``mallopt(M_MMAP_THRESHOLD, 4 MB)`` fixes the threshold, so blocks of 4 MB and more get
  their own mapping, returned to the OS when freed. It is the in-process equivalent of
  ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4194304``, which has to be set before Python
  starts; nothing is changed when ``GLIBC_TUNABLES`` already sets the threshold or the C
  library is not glibc. Huge pages (torch's ``THP_MEM_ALLOC_ENABLE``: 2 MB alignment and
  ``madvise(MADV_HUGEPAGE)`` for blocks of 2 MB and more) cut the page faults of those fresh
  mappings. Both are off by default because both cost time where measured (paired runs,
  Co-DINO R50 training step at 320 px, 2-vCPU KVM guest, benchmarks/README.md): the fixed
  threshold 1.11x the step time for 0.92 of the peak RSS (2.1 M page faults per step
  against 0.7 M), huge pages 1.16x. Use them where memory is the limit, after a paired run
  (``benchmarks/ab_compare.py``) on the machine at hand.
* **OpenMP waiting**, on by default (``CODETR_OMP_SPIN=0`` leaves OpenMP's defaults).
  torch's OpenMP threads (GNU libgomp here) spin up to 300,000 times at the end of each
  parallel region before sleeping; when another process holds one of the cores, the
  spinning threads take its time slices from the thread that still has work, and a step
  runs many times slower.
  ``GOMP_SPINCOUNT`` (libgomp) and ``KMP_BLOCKTIME`` (Intel's runtime) bound that spin;
  they are read when the runtime loads, so this must run before ``import torch``. Values
  a user set are kept.

Call :func:`configure_cpu_runtime` first thing in a script (the ``codetr-train`` and
``codetr-test`` commands in :mod:`codetr.cli`, so tools/train.py and tools/test.py too,
tools/misc/run_demo.py and the benchmarks do); it imports neither torch nor mmengine, and
does nothing in a process that has imported torch already (a test importing a tool, say):
there the OpenMP runtime and torch's allocator have read their settings.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

LEAN_MALLOC_ENV = 'CODETR_LEAN_MALLOC'
OMP_SPIN_ENV = 'CODETR_OMP_SPIN'
M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
LEAN_MMAP_THRESHOLD = 4 * 2**20
# Spin iterations before an idle OpenMP thread sleeps (libgomp's default is 300,000, and
# 1,000 only when it sees more threads than CPUs): about 10-50 us on current CPUs, enough
# to keep back-to-back operators' regions warm on an idle machine.
GOMP_SPINCOUNT = '10000'
KMP_BLOCKTIME = '1'  # milliseconds (Intel OpenMP's default is 200)


def _enabled(name: str, default: str = '1') -> bool:
    return os.environ.get(name, default).strip().lower() not in ('0', 'false', 'off', 'no')


def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (mallopt with glibc's parameter numbers)."""
    if not sys.platform.startswith('linux'):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
    except (OSError, AttributeError):
        return None
    return libc


def apply_lean_malloc(huge_pages: bool = False) -> dict:
    """Fix glibc's mmap threshold at 4 MB and, with ``huge_pages``, ask torch for
    transparent huge pages; what was applied."""
    applied: dict = {}
    if 'glibc.malloc.mmap_threshold' in os.environ.get('GLIBC_TUNABLES', ''):
        applied['mmap_threshold'] = 'GLIBC_TUNABLES'
    else:
        libc = _glibc()
        if libc is not None and libc.mallopt(M_MMAP_THRESHOLD, LEAN_MMAP_THRESHOLD) == 1:
            applied['mmap_threshold'] = LEAN_MMAP_THRESHOLD
    if huge_pages and 'THP_MEM_ALLOC_ENABLE' not in os.environ:  # read at torch's first
        os.environ['THP_MEM_ALLOC_ENABLE'] = '1'                  # allocation
        applied['thp_mem_alloc'] = True
    return applied


def apply_omp_spin() -> dict:
    """Bound OpenMP's spin-wait (unless set by the user); what was applied."""
    applied = {}
    for name, value in (('GOMP_SPINCOUNT', GOMP_SPINCOUNT), ('KMP_BLOCKTIME', KMP_BLOCKTIME)):
        if name not in os.environ and 'OMP_WAIT_POLICY' not in os.environ:
            os.environ[name] = value
            applied[name] = value
    return applied


# The mmap threshold configure_cpu_runtime fixed in this process (bytes), if any: a benchmark
# that changes the threshold for a while (benchmarks/matrix_floor.py) restores it.
APPLIED_MMAP_THRESHOLD: int | None = None
# Environment variables this module may set; what a process started from here inherits.
RUNTIME_ENV = ('THP_MEM_ALLOC_ENABLE', 'GOMP_SPINCOUNT', 'KMP_BLOCKTIME')
SET_HERE: set[str] = set()


def configure_cpu_runtime() -> dict:
    """Apply the bounded OpenMP spin unless ``CODETR_OMP_SPIN=0``, and the lean allocator
    where asked for (``CODETR_LEAN_MALLOC=1``, with huge pages ``=thp``).

    Returns:
        ``applied`` (False when torch was imported first: nothing is changed then),
        ``mmap_threshold`` (bytes, 'GLIBC_TUNABLES' or None for glibc's dynamic default) and
        the values of the environment variables involved.
    """
    global APPLIED_MMAP_THRESHOLD
    names = (*RUNTIME_ENV, 'OMP_WAIT_POLICY', 'GLIBC_TUNABLES')
    if 'torch' in sys.modules:
        return {'applied': False, 'mmap_threshold': None,
                **{n: os.environ.get(n) for n in names}}
    before = {name: os.environ.get(name) for name in RUNTIME_ENV}
    threshold = None
    if _enabled(LEAN_MALLOC_ENV, default='0'):
        huge_pages = os.environ.get(LEAN_MALLOC_ENV, '').strip().lower() == 'thp'
        threshold = apply_lean_malloc(huge_pages).get('mmap_threshold')
        if isinstance(threshold, int):
            APPLIED_MMAP_THRESHOLD = threshold
    if _enabled(OMP_SPIN_ENV):
        apply_omp_spin()
    SET_HERE.update(n for n in RUNTIME_ENV if before[n] is None and n in os.environ)
    return {'applied': True, 'mmap_threshold': threshold,
            **{n: os.environ.get(n) for n in names}}
