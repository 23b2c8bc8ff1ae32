"""numba for the layout algorithms (t-SNE, IGTD, REFINED): where compiled kernels are cached and
how many threads they run on."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numba

# numba's compiled kernels go to the user's cache folder (NUMBA_CACHE_DIR, where set, wins), not
# beside this package: an installed package's folder may be read-only or shared between users
if not numba.config.CACHE_DIR:
    _cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    numba.config.CACHE_DIR = str(_cache / "textvision" / "numba")


@contextmanager
def numba_threads(n_jobs: int | None):
    """Run numba's parallel kernels on `n_jobs` threads inside the block (None: numba's
    default), and restore the previous number after it."""
    before = numba.get_num_threads()
    if n_jobs is not None:
        numba.set_num_threads(max(1, min(n_jobs, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)
