"""Test-wide settings: float64 JAX (parity tests compare at 1e-6 relative in float64)."""

import os

# Keep each xdist worker to one intra-op thread pool: two workers on two cores.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
