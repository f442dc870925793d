"""Datasets, class names and default threat models.

Every image tensor advlab hands out is float32 in [0, 1], shape (N, C, H, W); labels are int64.

Where the data comes from (first hit wins):
  fashion_mnist  ROOT/FashionMNIST/raw (IDX files) -> the Debian package dataset-fashion-mnist
                 (decompressed into ROOT) -> torchvision download (online) -> a clear error.
  mnist, cifar10 ROOT via torchvision (downloaded when online) -> a clear error.
  synthetic*     generated on the fly, for unit tests (no files).
ROOT is $ADVLAB_DATA, else ~/.cache/advlab/data.

Fashion-MNIST's IDX files are checked when they are read: magic number, header sizes against the
file size, image and label counts, label range, and the sha256 of a full-size file against the
canonical file's (FMNIST_SHA256). A damaged file raises DataFileError (a ValueError) naming the file
and what is wrong; `advlab data prepare` (prepare_fashion_mnist) re-creates it from its source.
"""
from __future__ import annotations

import glob
import gzip
import hashlib
import math
import numbers
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from advlab.validate import check_device, check_images, check_labels  # noqa: F401 (also re-exported as data.check_*)

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
# sha256 and size of the four canonical (decompressed) Fashion-MNIST files, as Zalando published them
# (computed from the Debian package dataset-fashion-mnist's .gz files after decompression)
FMNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FMNIST_SIZES = {"train-images-idx3-ubyte": 47040016, "train-labels-idx1-ubyte": 60008,
                "t10k-images-idx3-ubyte": 7840016, "t10k-labels-idx1-ubyte": 10008}
REPAIR_HINT = "run `advlab data prepare` to re-create it from its source"


class DataNotFoundError(RuntimeError):
    """The dataset is not on this machine and could not be downloaded."""


class DataFileError(DataNotFoundError, ValueError):
    """A data file is damaged or inconsistent: truncated, a wrong magic number, counts that disagree,
    labels out of range, or a full-size file whose sha256 is not the canonical one. The message names
    the file and what is wrong; `advlab data prepare` repairs it. A ValueError, and a DataNotFoundError
    so that code which reports missing data reports this too."""


def info(name: str) -> DatasetInfo:
    """Metadata of a dataset: shape, class names, default threat model."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"name: unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def class_names(name: str) -> tuple:
    """The class names of dataset `name`, in label order."""
    return info(name).classes


def threat_model(name: str) -> dict:
    """Default threat model of a dataset, e.g. {'linf': 0.1, 'l2': 1.5} for Fashion-MNIST."""
    i = info(name)
    return {"linf": i.eps_linf, "l2": i.eps_l2}


def data_root() -> Path:
    """Where datasets live: $ADVLAB_DATA, else ~/.cache/advlab/data."""
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


def _write_atomic_from(src_open, dst: Path) -> None:
    """Copy the stream src_open() into dst through a temporary file, fsync and rename: a crash leaves
    the old file or the new one, never a truncated one."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        with src_open() as fi, open(tmp, "wb") as fo:
            shutil.copyfileobj(fi, fo, 1 << 20)
            fo.flush()
            os.fsync(fo.fileno())
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()


def prepare_fashion_mnist(root: Path | None = None, verbose: bool = True, split: str | None = None,
                          repair: bool = True) -> Path:
    """Make ROOT/FashionMNIST/raw hold the decompressed IDX files of `split` ("train", "test"; None:
    both, four files); returns that folder.

    repair=True (the default; `advlab data prepare`) also checks the files already there (magic
    number, sizes, counts, label range, sha256 of a full-size file) and re-creates a damaged one from
    its source: the Debian package, else a download; one that cannot be re-created raises
    DataFileError. repair=False (what data loading uses) only fills in missing files: reading checks
    the rest.

    The Debian package's .gz files are re-gzipped, so torchvision's md5 check rejects them and
    would try the network: we decompress them ourselves and load with download=False. A folder
    with the test files alone (an evaluation-only machine) serves the test split.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS} or None, got {split!r}")
    needed = [f for f in FMNIST_FILES if split is None or f.startswith("train" if split == "train" else "t10k")]
    raw = Path(root or data_root()) / "FashionMNIST" / "raw"
    damaged = {}
    if repair:
        for f in needed:
            if (raw / f).exists():
                problem = fmnist_file_problem(raw / f)
                if problem:
                    damaged[f] = problem
    todo = [f for f in needed if not (raw / f).exists() or f in damaged]
    if not todo:
        return raw
    if verbose:
        for problem in damaged.values():
            print(f"advlab: {problem}; re-creating it")
    src = _debian_fmnist_dir()
    if src is not None:
        raw.mkdir(parents=True, exist_ok=True)
        for f in todo:
            gz = os.path.join(src, f + ".gz")
            plain = os.path.join(src, f)
            if os.path.exists(gz):
                _write_atomic_from(lambda: gzip.open(gz, "rb"), raw / f)
            elif os.path.exists(plain):
                _write_atomic_from(lambda: open(plain, "rb"), raw / f)
        if all((raw / f).exists() for f in needed):
            _raise_if_damaged(raw, todo, f"re-created from {src}: the source itself is damaged; reinstall it "
                                         "with apt-get install --reinstall dataset-fashion-mnist")
            if verbose:
                print(f"advlab: Fashion-MNIST prepared from {src} into {raw}")
            return raw
    aside = {}
    try:  # online: torchvision downloads and checks the originals
        from torchvision.datasets import FashionMNIST
        for f in damaged:   # torchvision downloads only when a file is missing: move the damaged ones aside
            aside[f] = raw / f".{f}.damaged"
            os.replace(raw / f, aside[f])
        for train in (True, False):
            if split is None or train == (split == "train"):
                FashionMNIST(str(raw.parent.parent), train=train, download=True)
    except Exception as e:  # noqa: BLE001 -- any failure means: not available
        for f, p in aside.items():
            if not (raw / f).exists():
                os.replace(p, raw / f)
        if damaged:
            raise DataFileError(
                "Fashion-MNIST files are damaged and could not be re-created:\n"
                + "".join(f"  {problem}\n" for problem in damaged.values())
                + "  fix (Debian/Ubuntu, as root): apt-get install dataset-fashion-mnist, then advlab data prepare\n"
                f"  or put intact IDX files in {raw}/\n"
                f"  (download error: {type(e).__name__}: {e})") from None
        missing = ", ".join(f for f in needed if not (raw / f).exists())
        raise DataNotFoundError(
            "Fashion-MNIST was not found and could not be downloaded.\n"
            f"  looked in: {raw} and the Debian package dataset-fashion-mnist\n"
            f"  missing: {missing}\n"
            "  fix (Debian/Ubuntu, as root): apt-get install dataset-fashion-mnist\n"
            "  or put the IDX files (train-images-idx3-ubyte, ...; the t10k-* pair is enough for the test "
            "split) in $ADVLAB_DATA/FashionMNIST/raw/\n"
            f"  (download error: {type(e).__name__}: {e})") from None
    for p in aside.values():
        p.unlink(missing_ok=True)
    _raise_if_damaged(raw, todo, "downloaded, and still damaged: download it again")
    return raw


def _raise_if_damaged(raw: Path, files, what: str) -> None:
    problems = [p for p in (fmnist_file_problem(raw / f) for f in files) if p]
    if problems:
        raise DataFileError("; ".join(problems) + f" ({what})")


# ---------------------------------------------------------------------------------------------
# IDX files (http://yann.lecun.com/exdb/mnist/): magic 00 00 <type> <ndim>, ndim big-endian uint32
# sizes, then the values. Fashion-MNIST's are unsigned bytes (type 0x08).


def _damaged(path: Path, what: str) -> DataFileError:
    return DataFileError(f"{path.name}: {what} (in {path.parent}); {REPAIR_HINT}")


def _parse_idx(path: Path, data: bytes, ndim: int | None = None) -> tuple[list[int], int]:
    """(sizes, header length) of an IDX file of unsigned bytes after checking its magic number and
    that its size is what its header says; DataFileError naming the file otherwise."""
    if len(data) < 4:
        raise _damaged(path, f"{len(data)} bytes, too short for an IDX header (truncated?)")
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise _damaged(path, f"bad magic number {data[:4].hex()} (an IDX file of unsigned bytes starts "
                             f"with 000008 and its number of dimensions)")
    if ndim is not None and data[3] != ndim:
        raise _damaged(path, f"bad magic number {data[:4].hex()}: {data[3]} dimensions, expected {ndim}")
    header = 4 + 4 * data[3]
    if len(data) < header:
        raise _damaged(path, f"{len(data)} bytes, too short for its {data[3]}-dimensional header (truncated?)")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(data[3])]
    expected = header + math.prod(dims)
    if len(data) != expected:
        raise _damaged(path, f"{len(data)} bytes, but its header says {'x'.join(map(str, dims))} values "
                             f"({expected} bytes): {'truncated' if len(data) < expected else 'trailing bytes'}")
    return dims, header


def _check_sha256(path: Path, data: bytes) -> None:
    """A file with a canonical Fashion-MNIST file's name and size must have its sha256."""
    want = FMNIST_SHA256.get(path.name)
    if want is not None and len(data) == FMNIST_SIZES[path.name]:
        digest = hashlib.sha256(data).hexdigest()
        if digest != want:
            raise _damaged(path, f"sha256 {digest[:16]}... differs from the canonical Fashion-MNIST file's "
                                 f"{want[:16]}... (corrupted bytes)")


def _read_idx(path: Path, ndim: int | None = None) -> torch.Tensor:
    """The IDX file's values as a uint8 tensor of its header's shape, after the checks of _parse_idx
    and, for a full-size Fashion-MNIST file, its sha256."""
    path = Path(path)
    data = path.read_bytes()
    dims, header = _parse_idx(path, data, ndim)
    _check_sha256(path, data)
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(dims)


def _check_label_values(path: Path, y: torch.Tensor) -> None:
    if len(y) and int(y.max()) >= len(FASHION_MNIST_CLASSES):
        i = int(y.argmax())
        raise _damaged(path, f"label {int(y[i])} at index {i}; Fashion-MNIST labels lie in "
                             f"0..{len(FASHION_MNIST_CLASSES) - 1} (corrupted bytes)")


def _check_image_size(path: Path, x: torch.Tensor) -> None:
    if tuple(x.shape[1:]) != (28, 28):
        raise _damaged(path, f"images of size {x.shape[1]}x{x.shape[2]}; Fashion-MNIST's are 28x28")


def _read_fmnist_split(raw: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, 1, 28, 28), int64 labels) of one split, the two files checked against each other."""
    ip, lp = raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"
    x = _read_idx(ip, ndim=3)
    _check_image_size(ip, x)
    y = _read_idx(lp, ndim=1).long()
    _check_label_values(lp, y)
    if len(y) != len(x):
        raise _damaged(lp, f"{len(y)} labels, but {ip.name} holds {len(x)} images (the counts must agree)")
    return x.unsqueeze(1), y


def fmnist_file_problem(path: Path) -> str | None:
    """What is wrong with one Fashion-MNIST IDX file (a DataFileError's message), or None when it is
    intact: magic number, sizes, sha256 of a full-size file, label range, and the count of a split's
    labels file against its images file (when both are there)."""
    path = Path(path)
    try:
        t = _read_idx(path, ndim=3 if "images" in path.name else 1)
        if "images" in path.name:
            _check_image_size(path, t)
        if "labels" in path.name:
            _check_label_values(path, t)
            images = path.with_name(path.name.replace("labels-idx1", "images-idx3"))
            head = images.read_bytes()[:8] if images.exists() else b""
            if len(head) == 8 and head[:3] == bytes([0, 0, 8]) and int.from_bytes(head[4:8], "big") != len(t):
                raise _damaged(path, f"{len(t)} labels, but {images.name} holds "
                                     f"{int.from_bytes(head[4:8], 'big')} images (the counts must agree)")
    except DataFileError as e:
        return str(e).split(f"; {REPAIR_HINT}")[0]
    return None


@lru_cache(maxsize=None)
def _load_full(name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split as (uint8 images (N,C,H,W), int64 labels), cached in memory."""
    train = split == "train"
    if name.startswith("synthetic"):
        return _synthetic(info(name), split)
    if name == "fashion_mnist":
        raw = prepare_fashion_mnist(split=split, repair=False)
        return _read_fmnist_split(raw, "train" if train else "t10k")
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


def _check_int(v, name: str, minimum: int | None = None, allow_none: bool = False) -> int | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or (minimum is not None and v < minimum):
        what = "an int" + (f" >= {minimum}" if minimum is not None else "") + (" or None" if allow_none else "")
        raise ValueError(f"{name}: must be {what}, got {v!r}")
    return int(v)


def batch(name: str = "fashion_mnist", split: str = "test", n: int | None = 256, seed: int = 0,
          device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """n images drawn without replacement (the same n for the same seed), as (x, y).

    x: float32 (n, C, H, W) in [0, 1]; y: int64 (n,). n=None returns the whole split in order.
    Every argument is checked, whether or not it is used (seed with n=None): ValueError naming it.
    """
    info(name)
    _check_split(split)
    n = _check_int(n, "n", minimum=1, allow_none=True)
    seed = _check_int(seed, "seed")
    device = check_device(device)
    x_all, y_all = _load_full(name, split)
    if n is None:
        idx = torch.arange(len(y_all))
    else:
        if n > len(y_all):
            raise ValueError(f"n: {name}/{split} has only {len(y_all)} images, asked for {n}")
        idx = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(seed))[:n]
    return x_all[idx].float().div_(255).to(device), y_all[idx].to(device)


def loader(name: str = "fashion_mnist", split: str = "train", batch_size: int = 128,
           shuffle: bool | None = None, seed: int = 0, n: int | None = None,
           num_workers: int = 0) -> DataLoader:
    """A DataLoader over an in-memory split (these datasets fit in memory several times over)."""
    _check_int(batch_size, "batch_size", minimum=1)
    if shuffle is not None and not isinstance(shuffle, bool):
        raise ValueError(f"shuffle: must be True, False or None, got {shuffle!r}")
    _check_int(num_workers, "num_workers", minimum=0)
    x, y = batch(name, split, n=n, seed=seed)
    shuffle = (split == "train") if shuffle is None else shuffle
    return DataLoader(TensorDataset(x, y), batch_size=int(batch_size), shuffle=shuffle,
                      generator=torch.Generator().manual_seed(seed), num_workers=int(num_workers))
