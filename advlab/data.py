"""Datasets, class names and default threat models.

Every image tensor advlab hands out is float32 in [0, 1], shape (N, C, H, W); labels are int64.

Where the data comes from (first hit wins):
  fashion_mnist  ROOT/FashionMNIST/raw (IDX files) -> the Debian package dataset-fashion-mnist
                 (decompressed into ROOT) -> torchvision download (online) -> a clear error.
  mnist, cifar10 ROOT via torchvision (downloaded when online) -> a clear error.
  synthetic*     generated on the fly, for unit tests (no files).
ROOT is $ADVLAB_DATA, else ~/.cache/advlab/data.
"""
from __future__ import annotations

import glob
import gzip
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from advlab.validate import check_images, check_labels  # noqa: F401 (also re-exported as data.check_*)

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: tuple            # (C, H, W)
    classes: tuple
    eps_linf: float         # default Linf threat model of the course
    eps_l2: float           # default L2 threat model
    n_train: int
    n_test: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)


DATASETS = {
    "fashion_mnist": DatasetInfo("fashion_mnist", (1, 28, 28), FASHION_MNIST_CLASSES, 0.1, 1.5, 60000, 10000),
    "mnist": DatasetInfo("mnist", (1, 28, 28), MNIST_CLASSES, 0.3, 2.0, 60000, 10000),
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), CIFAR10_CLASSES, 8 / 255, 0.5, 50000, 10000),
}
# synthetic look-alikes: "synthetic" has Fashion-MNIST's shape; "synthetic-cifar10" CIFAR-10's, etc.
for _real in list(DATASETS):
    _i = DATASETS[_real]
    DATASETS[f"synthetic-{_real}"] = DatasetInfo(f"synthetic-{_real}", _i.shape, _i.classes, _i.eps_linf,
                                                 _i.eps_l2, 2048, 512)
DATASETS["synthetic"] = DatasetInfo("synthetic", (1, 28, 28), FASHION_MNIST_CLASSES, 0.1, 1.5, 2048, 512)

SPLITS = ("train", "test")
FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class DataNotFoundError(RuntimeError):
    """The dataset is not on this machine and could not be downloaded."""


def info(name: str) -> DatasetInfo:
    """Metadata of a dataset: shape, class names, default threat model."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"name: unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def class_names(name: str) -> tuple:
    return info(name).classes


def threat_model(name: str) -> dict:
    """Default threat model of a dataset, e.g. {'linf': 0.1, 'l2': 1.5} for Fashion-MNIST."""
    i = info(name)
    return {"linf": i.eps_linf, "l2": i.eps_l2}


def data_root() -> Path:
    return Path(os.environ.get("ADVLAB_DATA") or Path.home() / ".cache" / "advlab" / "data")


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST, offline first


def _debian_fmnist_dir() -> str | None:
    """Folder of the Debian package dataset-fashion-mnist, if it is installed."""
    for pattern in ("/usr/share/datasets/fashion-mnist", "/usr/share/*/fashion-mnist*"):
        for hit in glob.glob(pattern, recursive=True):
            d = hit if os.path.isdir(hit) else os.path.dirname(hit)
            if glob.glob(os.path.join(d, "t10k-images-idx3-ubyte*")):
                return d
    return None


def prepare_fashion_mnist(root: Path | None = None, verbose: bool = True, split: str | None = None) -> Path:
    """Make ROOT/FashionMNIST/raw hold the decompressed IDX files of `split` ("train", "test"; None:
    both, four files); returns that folder.

    The Debian package's .gz files are re-gzipped, so torchvision's md5 check rejects them and
    would try the network: we decompress them ourselves and load with download=False. A folder
    with the test files alone (an evaluation-only machine) serves the test split.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS} or None, got {split!r}")
    needed = [f for f in FMNIST_FILES if split is None or f.startswith("train" if split == "train" else "t10k")]
    raw = Path(root or data_root()) / "FashionMNIST" / "raw"
    if all((raw / f).exists() for f in needed):
        return raw
    src = _debian_fmnist_dir()
    if src is not None:
        raw.mkdir(parents=True, exist_ok=True)
        for f in needed:
            gz = os.path.join(src, f + ".gz")
            plain = os.path.join(src, f)
            if os.path.exists(gz):
                with gzip.open(gz, "rb") as fi, open(raw / f, "wb") as fo:
                    shutil.copyfileobj(fi, fo)
            elif os.path.exists(plain):
                shutil.copyfile(plain, raw / f)
        if all((raw / f).exists() for f in needed):
            if verbose:
                print(f"advlab: Fashion-MNIST prepared from {src} into {raw}")
            return raw
    try:  # online: torchvision downloads and checks the originals
        from torchvision.datasets import FashionMNIST
        for train in (True, False):
            if split is None or train == (split == "train"):
                FashionMNIST(str(raw.parent.parent), train=train, download=True)
        return raw
    except Exception as e:  # noqa: BLE001 -- any failure means: not available
        missing = ", ".join(f for f in needed if not (raw / f).exists())
        raise DataNotFoundError(
            "Fashion-MNIST was not found and could not be downloaded.\n"
            f"  looked in: {raw} and the Debian package dataset-fashion-mnist\n"
            f"  missing: {missing}\n"
            "  fix (Debian/Ubuntu, as root): apt-get install dataset-fashion-mnist\n"
            "  or put the IDX files (train-images-idx3-ubyte, ...; the t10k-* pair is enough for the test "
            "split) in $ADVLAB_DATA/FashionMNIST/raw/\n"
            f"  (download error: {type(e).__name__}: {e})") from None


def _read_idx(path: Path) -> torch.Tensor:
    data = path.read_bytes()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


@lru_cache(maxsize=None)
def _load_full(name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split as (uint8 images (N,C,H,W), int64 labels), cached in memory."""
    train = split == "train"
    if name.startswith("synthetic"):
        return _synthetic(info(name), split)
    if name == "fashion_mnist":
        raw = prepare_fashion_mnist(split=split)
        prefix = "train" if train else "t10k"
        x = _read_idx(raw / f"{prefix}-images-idx3-ubyte").unsqueeze(1)
        y = _read_idx(raw / f"{prefix}-labels-idx1-ubyte").long()
        return x, y
    root = str(data_root())
    try:
        from torchvision import datasets
        if name == "mnist":
            ds = datasets.MNIST(root, train=train, download=True)
            return ds.data.unsqueeze(1), ds.targets.long()
        ds = datasets.CIFAR10(root, train=train, download=True)
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)
    except Exception as e:  # noqa: BLE001
        raise DataNotFoundError(
            f"{name} is not in {root} and could not be downloaded (this machine may be offline).\n"
            f"  fix: on a machine with internet run  python -c \"import advlab; advlab.data.batch('{name}')\"\n"
            f"  and copy {root} here (or set ADVLAB_DATA to a folder that has it). Offline, the course "
            "uses fashion_mnist.\n"
            f"  (error: {type(e).__name__}: {e})") from None


def _synthetic(i: DatasetInfo, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable fake data: each class is a fixed random template plus per-image noise."""
    g = torch.Generator().manual_seed(1234)
    templates = torch.rand((i.num_classes, *i.shape), generator=g)
    n = i.n_train if split == "train" else i.n_test
    g.manual_seed(1 if split == "train" else 2)
    y = torch.randint(0, i.num_classes, (n,), generator=g)
    x = 0.6 * templates[y] + 0.4 * torch.rand((n, *i.shape), generator=g)
    return (x * 255).round().to(torch.uint8), y


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: must be one of {SPLITS}, got {split!r}")


def tensors(name: str, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split as float images in [0, 1] and int64 labels."""
    info(name)
    _check_split(split)
    x, y = _load_full(name, split)
    return x.float().div_(255), y.clone()


def batch(name: str = "fashion_mnist", split: str = "test", n: int | None = 256, seed: int = 0,
          device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """n images drawn without replacement (the same n for the same seed), as (x, y).

    x: float32 (n, C, H, W) in [0, 1]; y: int64 (n,). n=None returns the whole split in order.
    """
    info(name)
    _check_split(split)
    x_all, y_all = _load_full(name, split)
    if n is None:
        idx = torch.arange(len(y_all))
    else:
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"n: must be a positive int or None, got {n!r}")
        if n > len(y_all):
            raise ValueError(f"n: {name}/{split} has only {len(y_all)} images, asked for {n}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed: must be an int, got {seed!r}")
        idx = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(seed))[:n]
    return x_all[idx].float().div_(255).to(device), y_all[idx].to(device)


def loader(name: str = "fashion_mnist", split: str = "train", batch_size: int = 128,
           shuffle: bool | None = None, seed: int = 0, n: int | None = None,
           num_workers: int = 0) -> DataLoader:
    """A DataLoader over an in-memory split (these datasets fit in memory several times over)."""
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size: must be a positive int, got {batch_size!r}")
    x, y = batch(name, split, n=n, seed=seed)
    shuffle = (split == "train") if shuffle is None else shuffle
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(seed), num_workers=num_workers)

