import os

import pytest
import torch

# The machine has 2 cores; keep tests deterministic and bounded.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def seeded():
    torch.manual_seed(0)
    return 0
