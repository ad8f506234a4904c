"""A fixture for parity tests that run torch optimizers: one intra-op thread while they run.

torch's CPU thread pool on a shared 2-core machine makes a 100-step run of a few tiny tensors
35x slower (7.5 s instead of 0.2 s) when other processes compete for the cores; the tensors
here are far too small to gain from threads. Import the fixture and name it in `pytestmark`.
"""

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)
