"""Thread pools: every process of a run computes with as many threads as the CPUs it holds, and waits without
spinning.

A Ray worker (model actor, decoder, task) holds ``num_cpus`` CPUs (:func:`ccs_ray.cluster.use_held_cpus` rounds them,
at least 1); the driver holds :data:`DRIVER_CPUS` (it coordinates: the heavy math runs in workers that hold CPUs).
:func:`set_threads` sizes torch's intra-op pool and every BLAS and OpenMP pool loaded in the process (through
threadpoolctl: OpenBLAS, MKL, libgomp, ...). More threads than held CPUs oversubscribe the cores as soon as other
work runs beside them, and OpenMP threads that spin while they wait for a descheduled peer then cost many times the
work itself (an eigendecomposition measured 30x slower with two threads beside one busy core); so every process also
runs with :data:`THREAD_ENV` (OpenMP threads sleep while they wait), set before its OpenMP runtime loads: by the CLI
for the driver, inherited by a local cluster's workers, given to a remote cluster's through the job's runtime env
(:func:`ccs_ray.cluster.ensure_ray`).
"""

from __future__ import annotations

import os

DRIVER_CPUS = 1
THREAD_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def passive_waits() -> None:
    """Set :data:`THREAD_ENV` in this process's environment (a value the user set is kept); call it before torch or
    numpy is imported, so that their OpenMP runtime reads it."""
    for key, value in THREAD_ENV.items():
        os.environ.setdefault(key, value)


def set_threads(n: int) -> int:
    """Size this process's torch intra-op pool and every BLAS and OpenMP pool loaded in it to ``n`` threads (at least
    1); returns the count."""
    import torch
    from threadpoolctl import threadpool_limits

    n = max(1, int(n))
    torch.set_num_threads(n)
    threadpool_limits(limits=n)
    return n
