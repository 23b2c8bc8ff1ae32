"""One thread count for a step: torch, BLAS/OpenMP (threadpoolctl) and numba all honour it."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


@contextlib.contextmanager
def limit_threads(threads: int | None) -> Iterator[None]:
    """Run the block on at most `threads` threads (None: no limit). Libraries loaded inside the
    block read the environment variables; those loaded already are limited through their APIs.
    Restored on exit."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    saved_env = {name: os.environ.get(name) for name in _ENV}
    os.environ.update({name: str(threads) for name in _ENV if name != "NUMBA_NUM_THREADS"})
    if "numba" not in sys.modules:  # numba sizes its pool from this once, at import
        os.environ["NUMBA_NUM_THREADS"] = str(threads)
    from threadpoolctl import threadpool_limits

    torch = _torch()
    torch_threads = torch.get_num_threads() if torch else None
    if torch:
        torch.set_num_threads(threads)
    numba_threads = _set_numba_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        if torch:
            torch.set_num_threads(torch_threads)
        if numba_threads is not None:
            _set_numba_threads(numba_threads)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def share(items: Iterable, threads: int, work: Callable[[Callable[[], object]], None]) -> None:
    """Run `work(take)` on `threads` threads at once (in this thread for one): `take()` hands the
    next of `items` to whichever thread asks first (None when none is left), so a thread that
    runs slower takes fewer. An exception in any thread is raised here."""
    remaining, lock = iter(items), threading.Lock()

    def take():
        with lock:
            return next(remaining, None)

    if threads <= 1:
        work(take)
        return
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(work, take) for _ in range(threads)]:
            future.result()


def _torch():
    """torch if loaded (a step that imports it later reads OMP_NUM_THREADS)."""
    return sys.modules.get("torch")


def _set_numba_threads(threads: int) -> int | None:
    """Set numba's thread count if numba is loaded; return the previous count."""
    numba = sys.modules.get("numba")
    if numba is None:
        return None
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return before


def thread_counts() -> dict[str, int]:
    """The thread counts in force: torch, each BLAS/OpenMP pool, numba (where loaded)."""
    from threadpoolctl import threadpool_info

    torch = _torch()
    counts = {"torch": torch.get_num_threads()} if torch else {}
    for pool in threadpool_info():
        counts[f"{pool['user_api']}:{os.path.basename(pool['filepath'])}"] = pool["num_threads"]
    if "numba" in sys.modules:
        counts["numba"] = sys.modules["numba"].get_num_threads()
    return counts
