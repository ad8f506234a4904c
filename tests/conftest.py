"""Test-wide settings: float64 JAX (parity tests compare at 1e-6 relative in float64)."""

import os

# Keep each xdist worker to one intra-op thread pool: two workers on two cores. The tests' programs
# are small, so their cost is compiling them: LLVM's lowest optimisation level cuts a quarter of
# it (measured on test_contract's float16 runs); the HLO that the structural tests read is the
# same, only the machine code is slower. Benchmarks do not go through this file.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1 "
                      "--xla_backend_optimization_level=0")
# JAX's CPU eigh / QR / triangular solves call scipy's OpenBLAS LAPACK, whose thread pool spins on
# a loaded 2-core machine: one 128 x 128 eigh took 0.1 s of CPU (0.3 s wall) with it, 2 ms with
# one thread. Read when numpy loads OpenBLAS, so before the first import of numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
