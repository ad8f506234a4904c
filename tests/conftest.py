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


# The longest tests (each a subprocess or a whole CLI run, 30 s to a few minutes) go first: under
# `pytest -n 2` whichever worker draws one late would otherwise run alone at the end while the
# other idles. The rest keep their order.
_LONGEST_FIRST = (
    "tests/test_sharding.py::test_every_optimizer_on_data_model_and_explicit_meshes",
    "tests/test_sharding.py::test_state_shardings_on_eight_devices",
    "tests/test_checkpoint_faults.py",
    "tests/test_docs.py::test_the_site",
    "tests/comparison/test_compare.py::test_cli_compare",
    "tests/comparison/test_suite.py::test_suite_end_to_end",
    "tests/comparison/test_compare.py::test_cli_lr_sweep",
    "tests/test_matrix_work.py",
)


def pytest_collection_modifyitems(items):
  rank = lambda item: next((i for i, prefix in enumerate(_LONGEST_FIRST)
                            if item.nodeid.startswith(prefix)), len(_LONGEST_FIRST))
  items.sort(key=rank)  # stable: equal ranks keep their collected order
