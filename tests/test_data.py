import pytest
import torch

from advlab import data


def test_fashion_mnist_batch_shapes_and_range():
    x, y = data.batch("fashion_mnist", "test", n=64, seed=0)
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (64,) and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5
    assert 0 <= y.min() and y.max() < 10


def test_fashion_mnist_full_splits_have_documented_sizes():
    assert data.tensors("fashion_mnist", "test")[0].shape == (10000, 1, 28, 28)
    x, y = data.batch("fashion_mnist", "train", n=None)
    assert x.shape == (60000, 1, 28, 28)
    assert torch.bincount(y).tolist() == [6000] * 10  # Fashion-MNIST is balanced


def test_same_seed_same_batch_other_seed_other_batch():
    a = data.batch("fashion_mnist", "test", n=32, seed=3)
    b = data.batch("fashion_mnist", "test", n=32, seed=3)
    c = data.batch("fashion_mnist", "test", n=32, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_batch_is_a_view_that_cannot_corrupt_the_cache():
    x, _ = data.batch("fashion_mnist", "test", n=8, seed=0)
    x.zero_()
    x2, _ = data.batch("fashion_mnist", "test", n=8, seed=0)
    assert x2.max() > 0


@pytest.mark.parametrize("name,shape", [("synthetic", (1, 28, 28)), ("synthetic-cifar10", (3, 32, 32)),
                                        ("synthetic-mnist", (1, 28, 28))])
def test_synthetic_shapes(name, shape):
    x, y = data.batch(name, "train", n=16, seed=0)
    assert x.shape == (16, *shape) and 0 <= x.min() and x.max() <= 1
    assert data.info(name).num_classes == 10


def test_class_names_and_threat_models():
    assert data.class_names("fashion_mnist")[9] == "Ankle boot"
    assert data.class_names("cifar10")[0] == "airplane"
    assert data.threat_model("fashion_mnist") == {"linf": 0.1, "l2": 1.5}
    assert data.threat_model("mnist") == {"linf": 0.3, "l2": 2.0}
    assert data.threat_model("cifar10") == pytest.approx({"linf": 8 / 255, "l2": 0.5})


def test_loader_iterates_whole_subset():
    dl = data.loader("synthetic", "train", batch_size=100, n=250)
    sizes = [len(xb) for xb, _ in dl]
    assert sizes == [100, 100, 50]


@pytest.mark.parametrize("kwargs,arg", [
    (dict(name="imagenet"), "name"),
    (dict(name="fashion_mnist", split="validation"), "split"),
    (dict(name="fashion_mnist", n=0), "n"),
    (dict(name="fashion_mnist", n=-5), "n"),
    (dict(name="fashion_mnist", n=2.5), "n"),
    (dict(name="fashion_mnist", n=10**6), "n"),
    (dict(name="fashion_mnist", seed="zero"), "seed"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, arg):
    with pytest.raises(ValueError, match=rf"^{arg}:"):
        data.batch(**kwargs)


def test_check_images_rejects_bad_tensors():
    ok = torch.rand(2, 1, 28, 28)
    data.check_images(ok)
    for bad, msg in [(torch.rand(1, 28, 28), "shape"), (ok * 2, "range"), (ok.double().mul(float("nan")), "NaN"),
                     ((ok * 255).to(torch.uint8), "floating"), (ok.numpy(), "torch.Tensor")]:
        with pytest.raises(ValueError, match="^x:"):
            data.check_images(bad)
    with pytest.raises(ValueError, match="^x: expected images of shape"):
        data.check_images(ok, shape=(3, 32, 32))


def test_check_labels():
    data.check_labels(torch.tensor([0, 9]), 2, 10)
    for bad in [torch.tensor([0, 10]), torch.tensor([0]), torch.tensor([0.0, 1.0]), torch.tensor([-1, 0])]:
        with pytest.raises(ValueError, match="^y:"):
            data.check_labels(bad, 2, 10)


@pytest.fixture
def offline_empty(tmp_path, monkeypatch):
    """ADVLAB_DATA = tmp_path, no Debian package, no network: only what a test puts in tmp_path."""
    monkeypatch.setenv("ADVLAB_DATA", str(tmp_path))
    monkeypatch.setattr(data, "_debian_fmnist_dir", lambda: None)

    def offline(*a, **k):
        raise OSError("network unreachable")
    import torchvision.datasets
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    return tmp_path


def test_missing_data_gives_a_message_with_the_fix(offline_empty):
    with pytest.raises(data.DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.prepare_fashion_mnist(verbose=False)


def test_test_files_alone_serve_the_test_split(offline_empty):
    """An evaluation-only machine (the GPU runs carry the t10k files alone) loads the test split."""
    raw = offline_empty / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    n = 5   # IDX files by hand: magic (0, 0, uint8, ndim), big-endian sizes, bytes
    (raw / "t10k-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + b"".join(
        v.to_bytes(4, "big") for v in (n, 28, 28)) + bytes(n * 28 * 28))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes([3, 1, 4, 1, 5]))
    data._load_full.cache_clear()
    try:
        assert data.prepare_fashion_mnist(split="test", verbose=False) == raw
        x, y = data._load_full("fashion_mnist", "test")
        assert x.shape == (n, 1, 28, 28) and y.tolist() == [3, 1, 4, 1, 5]
        with pytest.raises(data.DataNotFoundError, match="missing: train-images-idx3-ubyte, train-labels"):
            data._load_full("fashion_mnist", "train")
        with pytest.raises(data.DataNotFoundError, match="missing: train-images"):
            data.prepare_fashion_mnist(verbose=False)          # both splits asked for
        with pytest.raises(ValueError, match="split"):
            data.prepare_fashion_mnist(split="val")
    finally:
        data._load_full.cache_clear()


def test_prepare_from_debian_package_decompresses(tmp_path, monkeypatch):
    if data._debian_fmnist_dir() is None:
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    raw = data.prepare_fashion_mnist(tmp_path, verbose=False)
    assert sorted(p.name for p in raw.iterdir()) == sorted(data.FMNIST_FILES)
    assert data._read_idx(raw / "t10k-labels-idx1-ubyte").shape == (10000,)
