"""Host memory that the process keeps for reuse, instead of glibc's ``malloc`` handing it back to the system.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and unmaps it when it
is freed, and it trims the heap's free top. A CPU training step allocates and frees tensors of hundreds of MiB, so
each of them is faulted in page by page, and zeroed by the kernel, every time: on the 2-core development machine
this was about a third of a FreeSOLO R50 step at 800 px (``benchmarks/train_step.py --host-memory``), spent in the
kernel. Serving large blocks from the heap and never trimming it lets the step reuse the pages it has already
touched. The price: the process's resident memory stays at its peak until it exits.

It is what PyTorch's CPU performance guides get from an ``LD_PRELOAD`` of jemalloc or tcmalloc, with no extra
library: two ``mallopt`` calls, which take effect at once and can be undone.
"""
import ctypes
import ctypes.util
import functools
from typing import Optional

__all__ = ['keep_freed_host_memory']

# mallopt parameters, glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
# glibc's defaults, restored by keep_freed_host_memory(False): the mmap threshold at its dynamic maximum (a process
# that freed large blocks ends there), the trim threshold at twice it, as glibc sets it, and its limit on mmaps
_DEFAULTS = {_M_MMAP_MAX: 65536, _M_MMAP_THRESHOLD: 32 * 2**20, _M_TRIM_THRESHOLD: 64 * 2**20}
_KEEP = {_M_MMAP_MAX: 0, _M_TRIM_THRESHOLD: 2**31 - 1}


@functools.lru_cache(maxsize=None)
def _libc() -> Optional[ctypes.CDLL]:
    """glibc, looked up once (``find_library`` may run ``ldconfig``), or None for another C library."""
    name = ctypes.util.find_library('c')
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    # musl and other C libraries have no mallopt, or one that does nothing
    return libc if libc is not None and hasattr(libc, 'mallopt') and hasattr(libc, 'gnu_get_libc_version') else None


def keep_freed_host_memory(enable: bool = True) -> bool:
    """With ``enable``, glibc serves large blocks from the heap and keeps freed memory for reuse (module
    docstring); with ``enable=False``, back to glibc's defaults (mmap for blocks of 32 MiB or more).

    Returns:
        bool: whether the setting was applied (False where the C library is not glibc, e.g. macOS or musl).
    """
    libc = _libc()
    if libc is None:
        return False
    settings = _KEEP if enable else _DEFAULTS
    return all(libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1 for param, value in settings.items())
