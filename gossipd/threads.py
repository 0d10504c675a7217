"""One compute thread per process for numpy's BLAS and, if it is loaded, torch.

The models are small and several processes (daemons, sweep workers) often
share a machine: BLAS or OpenMP workers spinning against each other cost far
more than they give (a batched evaluation of 256 MLPs on digits: ~12 ms on
one OpenBLAS thread, up to 1 s with a thread per core on a loaded 2-core
machine). threadpoolctl sets the limit at run time, whichever BLAS numpy was
built with. Call it after torch is imported, if torch is used.
"""

from __future__ import annotations

import sys


def one_compute_thread() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
