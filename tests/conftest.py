import os

import pytest
import torch

# The machine has 2 cores; keep tests deterministic and bounded.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def seeded():
    torch.manual_seed(0)
    return 0


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of small-tensor tests: with 2 threads on a busy 2-core machine the
    OpenMP threads wait on each other and these tests run many times slower. Use it with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
