import os
from pathlib import Path

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


@pytest.fixture(scope="module")
def linear_clf():
    """A seeded Flatten + Linear(784, 10) classifier in eval mode: the cheapest classifier for purifier tests."""
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()


@pytest.fixture(scope="session")
def zoo_cnn():
    """The zoo's fmnist/cnn; while the zoo has no weights for it, a quick-profile one trained once into
    build/zoo_quick (the oracle tests compare attacks on it, so any decent CNN serves)."""
    from advlab import train, zoo
    quick_root = Path(__file__).resolve().parents[1] / "build" / "zoo_quick"
    try:
        return zoo.load("fmnist/cnn")
    except zoo.NotTrainedError:
        pass
    try:
        return zoo.load("fmnist/cnn", root=quick_root)
    except (zoo.NotTrainedError, zoo.ChecksumError):
        pass
    entry = zoo.REGISTRY["fmnist/cnn"]
    cfg = train.TrainConfig(arch=entry.arch, dataset=entry.dataset, device="cpu",
                            arch_kwargs=dict(entry.arch_kwargs), **(entry.train | entry.train_quick))
    model, metrics = train.train(cfg, progress=False)
    zoo.save("fmnist/cnn", model, train.config_dict(cfg), metrics,
             f"advlab train fmnist/cnn --profile quick --out {quick_root}", root=quick_root)
    return zoo.load("fmnist/cnn", root=quick_root)
