"""Issue 15: Fashion-MNIST's IDX files are checked when read (magic number, header sizes against the
file size, image and label counts, label range, sha256 of a full-size file) and `advlab data prepare`
re-creates a damaged one from its source. Damaged copies live in a temporary ADVLAB_DATA, offline
(tests/test_data.py's `offline_empty` fixture)."""
from __future__ import annotations

import gzip
import shutil

import pytest
import torch

from advlab import cli, data
from test_data import offline_empty  # noqa: F401 (the fixture: ADVLAB_DATA = tmp_path, no source, no network)

REAL_RAW = data.data_root() / "FashionMNIST" / "raw"   # the prepared data, read before a fixture moves ADVLAB_DATA
DEBIAN = data._debian_fmnist_dir                          # before the fixture replaces it
N = 5
LABELS = bytes([3, 1, 4, 1, 5])


def _idx(dims, payload: bytes, magic=(0, 0, 8)) -> bytes:
    return bytes([*magic, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims) + payload


def _good_files():
    images = torch.arange(N * 28 * 28, dtype=torch.int64).remainder(256).to(torch.uint8)
    return {"t10k-images-idx3-ubyte": _idx((N, 28, 28), bytes(images.tolist())),
            "t10k-labels-idx1-ubyte": _idx((N,), LABELS)}


DAMAGES = {   # name -> (file, bytes of the damaged file, words its message must contain)
    "truncated": ("t10k-images-idx3-ubyte", lambda f: f[:-100], "truncated"),
    "trailing": ("t10k-images-idx3-ubyte", lambda f: f + b"\0" * 7, "trailing"),
    "header-only": ("t10k-labels-idx1-ubyte", lambda f: f[:6], "too short"),
    "wrong-magic": ("t10k-images-idx3-ubyte", lambda f: bytes([0x1f, 0x8b]) + f[2:], "magic"),
    "wrong-type": ("t10k-labels-idx1-ubyte", lambda f: f[:2] + bytes([0x0d]) + f[3:], "magic"),
    "wrong-ndim": ("t10k-labels-idx1-ubyte", lambda f: _idx((N, 1), LABELS), "dimensions"),
    "label-200": ("t10k-labels-idx1-ubyte", lambda f: f[:-1] + bytes([200]), "label 200"),
    "count-mismatch": ("t10k-labels-idx1-ubyte", lambda f: _idx((N - 1,), LABELS[:-1]), "counts must agree"),
    "image-size": ("t10k-images-idx3-ubyte", lambda f: _idx((N, 32, 32), bytes(N * 32 * 32)), "28x28"),
}


def _write(raw, files):
    raw.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (raw / name).write_bytes(blob)


@pytest.fixture
def raw(offline_empty):  # noqa: F811
    data._load_full.cache_clear()
    yield offline_empty / "FashionMNIST" / "raw"
    data._load_full.cache_clear()


def test_intact_small_files_load(raw):
    _write(raw, _good_files())
    x, y = data.batch("fashion_mnist", "test", n=None)
    assert x.shape == (N, 1, 28, 28) and y.tolist() == list(LABELS)


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_file_gives_a_clear_error_naming_it_and_the_repair(raw, damage):
    name, edit, words = DAMAGES[damage]
    files = _good_files()
    files[name] = edit(files[name])
    _write(raw, files)
    with pytest.raises(data.DataFileError) as info:
        data.batch("fashion_mnist", "test", n=3)
    msg = str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, data.DataNotFoundError)
    assert msg.startswith(f"{name}: ") and words in msg and "advlab data prepare" in msg, msg
    assert data.fmnist_file_problem(raw / name) is not None
    # prepare, offline and without a source, cannot re-create it: it says so, naming the file
    with pytest.raises(data.DataFileError, match=name):
        data.prepare_fashion_mnist(split="test", verbose=False)
    assert (raw / name).read_bytes() == files[name]      # the damaged file is left where it was


def _fake_debian(tmp_path, monkeypatch):
    src = tmp_path / "debian"
    src.mkdir()
    for name, blob in _good_files().items():
        with gzip.open(src / f"{name}.gz", "wb") as f:
            f.write(blob)
    monkeypatch.setattr(data, "_debian_fmnist_dir", lambda: str(src))
    return src


@pytest.mark.parametrize("damage", ["truncated", "wrong-magic", "label-200", "count-mismatch"])
def test_prepare_repairs_a_damaged_file_from_its_source(raw, tmp_path, monkeypatch, damage):
    _fake_debian(tmp_path, monkeypatch)
    name, edit, _ = DAMAGES[damage]
    files = _good_files()
    files[name] = edit(files[name])
    _write(raw, files)
    with pytest.raises(data.DataFileError):
        data.batch("fashion_mnist", "test", n=3)          # loading reports, it does not repair
    assert data.prepare_fashion_mnist(split="test", verbose=False) == raw
    assert (raw / name).read_bytes() == _good_files()[name]
    assert not [p.name for p in raw.iterdir() if p.name.startswith(".")]     # no temporary file left
    data._load_full.cache_clear()
    x, y = data.batch("fashion_mnist", "test", n=None)
    assert y.tolist() == list(LABELS)


def test_cli_data_prepare_repairs_and_reports(raw, tmp_path, monkeypatch, capsys):
    files = _good_files()
    files["t10k-labels-idx1-ubyte"] = DAMAGES["label-200"][1](files["t10k-labels-idx1-ubyte"])
    _write(raw, files)
    # no source: exit status 1 and a message naming the file
    assert cli.main(["data", "prepare"]) == 1
    err = capsys.readouterr().err
    assert "t10k-labels-idx1-ubyte" in err and "label 200" in err and "Traceback" not in err
    # the source comes back: prepare re-creates the damaged file (the train pair is still missing, so
    # the test split is what it can serve: use prepare for the split, the CLI wants both)
    _fake_debian(tmp_path, monkeypatch)
    data.prepare_fashion_mnist(split="test", verbose=True)
    assert "re-creating it" in capsys.readouterr().out
    assert data.fmnist_file_problem(raw / "t10k-labels-idx1-ubyte") is None


def test_full_size_files_are_checked_against_the_canonical_sha256(raw, monkeypatch):
    """A full-size file with one changed byte that is still a valid label: only the sha256 tells."""
    name = "t10k-labels-idx1-ubyte"
    if not (REAL_RAW / name).exists():
        pytest.skip("no canonical Fashion-MNIST files on this machine")
    raw.mkdir(parents=True)
    shutil.copyfile(REAL_RAW / "t10k-images-idx3-ubyte", raw / "t10k-images-idx3-ubyte")
    blob = bytearray((REAL_RAW / name).read_bytes())
    assert len(blob) == data.FMNIST_SIZES[name]
    blob[100] = (blob[100] + 1) % 10
    (raw / name).write_bytes(bytes(blob))
    with pytest.raises(data.DataFileError, match=rf"^{name}: sha256 .* canonical"):
        data.batch("fashion_mnist", "test", n=3)
    assert data.fmnist_file_problem(raw / "t10k-images-idx3-ubyte") is None
    assert "sha256" in data.fmnist_file_problem(raw / name)
    if DEBIAN() is not None:   # the real package re-creates the canonical file
        monkeypatch.setattr(data, "_debian_fmnist_dir", DEBIAN)
        data.prepare_fashion_mnist(split="test", verbose=False)
        assert (raw / name).read_bytes() == (REAL_RAW / name).read_bytes()


def test_recorded_sha256_are_those_of_the_debian_package():
    src = data._debian_fmnist_dir()
    if src is None:
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    import hashlib
    for name, want in data.FMNIST_SHA256.items():
        with gzip.open(f"{src}/{name}.gz", "rb") as f:
            blob = f.read()
        assert len(blob) == data.FMNIST_SIZES[name] and hashlib.sha256(blob).hexdigest() == want, name
