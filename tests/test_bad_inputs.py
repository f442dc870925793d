"""Issue 15: one table of bad inputs across data, training, zoo, attacks, metrics/evaluate, purifiers and
the CLI. Each row is (call, expected error type, the name the message must contain): the call must raise
that error and its message must name the bad argument (or, for the CLI, the option: exit status 2, one
message on stderr, no traceback).

The rows for attacks, zoo, CLI and defense_report cover fixes made in those areas (issue 15); at the
commit this table was written on (d4b7b0f) 63 of its 123 rows failed, now every row passes.

A second, smaller table checks the documented conversions (never errors): integer labels of any dtype
become int64, float64 images meet a float32 model.
"""
from __future__ import annotations

import json
import re
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from advlab import attacks, data, evaluate, models, zoo
from advlab.purifiers.base import Defense

pytestmark = pytest.mark.usefixtures("one_thread")


class Blur(Defense):
    """A deterministic, differentiable toy purifier: 3x3 box blur."""

    def _purify(self, x, generator):
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class CLIExit(Exception):
    """Raised by `_cli` when the command exited 2 with a message (and no traceback) on stderr."""


@pytest.fixture(scope="module")
def env():
    torch.manual_seed(0)
    x, y = data.batch("synthetic", "test", n=8, seed=0)
    return types.SimpleNamespace(
        cnn=models.build("cnn", "synthetic").eval(),            # input_shape (1, 28, 28)
        lin=nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval(),
        three=nn.Sequential(nn.Flatten(), nn.Linear(784, 3)).eval(),
        x=x, y=y, x3=x.repeat(1, 3, 1, 1), x32=F.pad(x, (2, 2, 2, 2)))


@pytest.fixture
def E(env, tmp_path, monkeypatch, capsys):
    return types.SimpleNamespace(**vars(env), tmp=tmp_path, mp=monkeypatch, capsys=capsys)


# --------------------------------------------------------------------------------------- helpers

def _idx(magic3: int, dims, payload: bytes) -> bytes:
    return bytes([0, 0, 8, magic3]) + b"".join(int(d).to_bytes(4, "big") for d in dims) + payload


def _damaged_fmnist(E, damage: str):
    """Offline ADVLAB_DATA in tmp with a small t10k pair, one of them damaged; then load the test split."""
    E.mp.setenv("ADVLAB_DATA", str(E.tmp))
    E.mp.setattr(data, "_debian_fmnist_dir", lambda: None)
    import torchvision.datasets

    def offline(*a, **k):
        raise OSError("network unreachable")
    E.mp.setattr(torchvision.datasets, "FashionMNIST", offline)
    raw = E.tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    n = 5
    images = _idx(3, (n, 28, 28), bytes(n * 28 * 28))
    labels = _idx(1, (n,), bytes([3, 1, 4, 1, 5]))
    if damage == "truncated":
        images = images[:-100]
    elif damage == "magic":
        images = bytes([1, 2]) + images[2:]
    elif damage == "label200":
        labels = labels[:-1] + bytes([200])
    elif damage == "count":
        labels = _idx(1, (n - 1,), bytes([3, 1, 4, 1]))
    (raw / "t10k-images-idx3-ubyte").write_bytes(images)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(labels)
    data._load_full.cache_clear()
    try:
        data.batch("fashion_mnist", "test", n=3)
    finally:
        data._load_full.cache_clear()


def _zoo_root(E, edit):
    """A temporary zoo with fmnist/mlp saved in it; edit(manifest, root) damages it; then load."""
    root = E.tmp / "zoo"
    zoo.save("fmnist/mlp", models.build("mlp"), {}, {}, "test", root=root)
    man = json.loads((root / "manifest.json").read_text())
    name = edit(man, root) or "fmnist/mlp"
    (root / "manifest.json").write_text(json.dumps(man))
    zoo.load(name, root=root)


def _outside(man, root, absolute=False):
    src = root / man["fmnist/mlp"]["file"]
    dst = root.parent / "outside.safetensors"
    src.rename(dst)
    man["fmnist/mlp"]["file"] = str(dst) if absolute else "../outside.safetensors"


def _other_arch(man, root):
    man["fmnist/cnn"] = dict(man["fmnist/mlp"])
    return "fmnist/cnn"


def _truncated_manifest(E):
    root = E.tmp / "zoo"
    zoo.save("fmnist/mlp", models.build("mlp"), {}, {}, "test", root=root)
    text = (root / "manifest.json").read_text()
    (root / "manifest.json").write_text(text[: len(text) // 2])
    zoo.load("fmnist/mlp", root=root)


def _cli(E, *argv):
    from advlab import cli
    E.mp.chdir(E.tmp)
    try:
        rc = cli.main(list(argv))
    except SystemExit as e:
        rc = e.code
    err = E.capsys.readouterr().err
    if rc != 2 or "Traceback" in err or not err.strip():
        raise AssertionError(f"exit status {rc}, stderr {err[-500:]!r}")
    raise CLIExit(err)


def _train(**kw):
    from advlab.training import loop
    loop.train(loop.TrainConfig(**(dict(dataset="synthetic", arch="mlp", epochs=1, n_train=64, n_test=32,
                                         device="cpu") | kw)), progress=False)


def _short_attack(atk):
    """An attack that returns one row fewer than it was given."""
    return lambda model, x, y: atk(model, x, y)[:-1]


def row(id, call, exc, name, mark=None):
    return pytest.param(call, exc, name, id=id, marks=[mark] if mark else [])


FIT_ATTACKS = {
    "FGSM": lambda: attacks.FGSM(eps=0.1, checks=False),
    "PGD": lambda: attacks.PGD(eps=0.1, alpha=0.02, steps=2, checks=False),
    "CW": lambda: attacks.CW(steps=2, checks=False),
    "DeepFool": lambda: attacks.DeepFool(steps=2, checks=False),
    "APGD": lambda: attacks.APGD(eps=0.1, steps=2, checks=False),
    "APGDT": lambda: attacks.APGDT(eps=0.1, steps=2, checks=False),
    "FAB": lambda: attacks.FAB(eps=0.1, steps=2, checks=False),
    "Square": lambda: attacks.Square(eps=0.1, n_queries=4, checks=False),
    "AutoAttack": lambda: attacks.AutoAttack(eps=0.1, steps=2, n_queries=4, checks=False),
}

ROWS = [
    # ------------------------------------------------------------------ data
    row("data.batch-name", lambda E: data.batch("imagenet"), ValueError, "name"),
    row("data.batch-split", lambda E: data.batch("synthetic", split="validation"), ValueError, "split"),
    row("data.batch-n0", lambda E: data.batch("synthetic", n=0), ValueError, "n"),
    row("data.batch-n-bool", lambda E: data.batch("synthetic", n=True), ValueError, "n"),
    row("data.batch-n-str", lambda E: data.batch("synthetic", n="10"), ValueError, "n"),
    row("data.batch-n-too-many", lambda E: data.batch("synthetic", "test", n=513), ValueError, "n"),
    row("data.batch-seed-None", lambda E: data.batch("synthetic", n=4, seed=None), ValueError, "seed"),
    row("data.batch-nNone-seed-str", lambda E: data.batch("synthetic", n=None, seed="a"), ValueError, "seed"),
    row("data.batch-nNone-seed-float", lambda E: data.batch("synthetic", n=None, seed=1.5), ValueError, "seed"),
    row("data.batch-device", lambda E: data.batch("synthetic", n=4, device="bogus"), ValueError, "device"),
    row("data.tensors-name", lambda E: data.tensors("nope"), ValueError, "name"),
    row("data.tensors-split", lambda E: data.tensors("synthetic", split="dev"), ValueError, "split"),
    row("data.info-int", lambda E: data.info(3), ValueError, "name"),
    row("data.loader-batch_size0", lambda E: data.loader("synthetic", batch_size=0), ValueError, "batch_size"),
    row("data.loader-batch_size-float", lambda E: data.loader("synthetic", batch_size=2.5), ValueError, "batch_size"),
    row("data.loader-num_workers", lambda E: data.loader("synthetic", n=8, num_workers=-1), ValueError, "num_workers"),
    row("data.prepare-split", lambda E: data.prepare_fashion_mnist(split="val"), ValueError, "split"),
    row("data.file-truncated", lambda E: _damaged_fmnist(E, "truncated"), ValueError, "t10k-images-idx3-ubyte"),
    row("data.file-magic", lambda E: _damaged_fmnist(E, "magic"), ValueError, "t10k-images-idx3-ubyte"),
    row("data.file-label200", lambda E: _damaged_fmnist(E, "label200"), ValueError, "t10k-labels-idx1-ubyte"),
    row("data.file-count", lambda E: _damaged_fmnist(E, "count"), ValueError, "t10k-labels-idx1-ubyte"),
    # ------------------------------------------------------------------ training
    row("train-epochs0", lambda E: _train(epochs=0), ValueError, "epochs"),
    row("train-batch_size0", lambda E: _train(batch_size=0), ValueError, "batch_size"),
    row("train-lr-negative", lambda E: _train(lr=-1.0), ValueError, "lr"),
    row("train-dataset", lambda E: _train(dataset="imagenet"), ValueError, "dataset"),
    row("train-arch", lambda E: _train(arch="transformer"), ValueError, "arch"),
    row("train-n_train0", lambda E: _train(n_train=0), ValueError, "n_train"),
    row("train-device", lambda E: _train(device="bogus"), ValueError, "device"),
    # ------------------------------------------------------------------ zoo
    row("zoo.load-unknown", lambda E: zoo.load("fmnist/nope"), ValueError, "name"),
    row("zoo.load-int", lambda E: zoo.load(3), ValueError, "name"),
    row("zoo.info-unknown", lambda E: zoo.info("nope"), ValueError, "name"),
    row("zoo.build-unknown", lambda E: zoo.build("nope"), ValueError, "name"),
    row("zoo.save-unknown", lambda E: zoo.save("nope", E.lin, {}, {}, "x", root=E.tmp), ValueError, "name"),
    row("zoo.load-relative-outside", lambda E: _zoo_root(E, _outside), (ValueError, RuntimeError, OSError),
        "fmnist/mlp"),
    row("zoo.load-absolute-outside", lambda E: _zoo_root(E, lambda m, r: _outside(m, r, True)),
        (ValueError, RuntimeError, OSError), "fmnist/mlp"),
    row("zoo.load-no-sha256", lambda E: _zoo_root(E, lambda m, r: m["fmnist/mlp"].pop("sha256") and None),
        (ValueError, RuntimeError, OSError), "fmnist/mlp"),
    row("zoo.load-truncated-manifest", _truncated_manifest, (ValueError, RuntimeError, OSError), "fmnist/mlp"),
    row("zoo.load-other-architecture", lambda E: _zoo_root(E, _other_arch), (ValueError, RuntimeError, OSError),
        "fmnist/cnn"),
    # ------------------------------------------------------------------ attacks: settings
    row("PGD-eps-negative", lambda E: attacks.PGD(eps=-1), ValueError, "eps"),
    row("PGD-eps-nan", lambda E: attacks.PGD(eps=float("nan")), ValueError, "eps"),
    row("PGD-steps0", lambda E: attacks.PGD(steps=0), ValueError, "steps"),
    row("PGD-norm", lambda E: attacks.PGD(norm="l3"), ValueError, "norm"),
    row("PGD-alpha-negative", lambda E: attacks.PGD(alpha=-0.1), ValueError, "alpha"),
    row("PGD-seed-str", lambda E: attacks.PGD(seed="a"), ValueError, "seed"),
    row("PGD-chunk_size0", lambda E: attacks.PGD(chunk_size=0), ValueError, "chunk_size"),
    row("FGSM-eps-str", lambda E: attacks.FGSM(eps="0.1"), ValueError, "eps"),
    row("CW-steps0", lambda E: attacks.CW(steps=0), ValueError, "steps"),
    row("DeepFool-overshoot", lambda E: attacks.DeepFool(overshoot=-1), ValueError, "overshoot"),
    row("APGD-loss", lambda E: attacks.APGD(eps=0.1, loss="hinge"), ValueError, "loss"),
    row("Square-n_queries0", lambda E: attacks.Square(eps=0.1, n_queries=0), ValueError, "n_queries"),
    row("AutoAttack-version", lambda E: attacks.AutoAttack(eps=0.1, version="bogus"), ValueError, "version"),
    # ------------------------------------------------------------------ attacks: inputs
    row("PGD-model-str", lambda E: attacks.PGD(steps=1)("model", E.x, E.y), ValueError, "model"),
    row("PGD-y-99", lambda E: attacks.PGD(steps=1, checks=False)(E.cnn, E.x, torch.full_like(E.y, 99)),
        ValueError, "y"),
    row("PGD-y-short", lambda E: attacks.PGD(steps=1)(E.cnn, E.x, E.y[:-1]), ValueError, "y"),
    row("PGD-x-range", lambda E: attacks.PGD(steps=1)(E.cnn, E.x * 2, E.y), ValueError, "x"),
    *[row(f"{k}-x-3-channels", (lambda f: lambda E: f()(E.cnn, E.x3, E.y))(f), ValueError, "x")
      for k, f in FIT_ATTACKS.items()],
    row("PGD-x-32x32", lambda E: FIT_ATTACKS["PGD"]()(E.cnn, E.x32, E.y), ValueError, "x"),
    row("APGD-x-32x32", lambda E: FIT_ATTACKS["APGD"]()(E.cnn, E.x32, E.y), ValueError, "x"),
    # ------------------------------------------------------------------ metrics / evaluate
    row("accuracy-y-99", lambda E: evaluate.accuracy(E.lin, E.x, torch.full_like(E.y, 99)), ValueError, "y"),
    row("accuracy-3-class-model", lambda E: evaluate.accuracy(E.three, E.x, E.y.clamp(min=3)), ValueError, "y"),
    row("accuracy-empty", lambda E: evaluate.accuracy(E.lin, E.x[:0], E.y[:0]), ValueError, "x"),
    row("accuracy-x-3-channels", lambda E: evaluate.accuracy(E.cnn, E.x3, E.y), ValueError, "x"),
    row("accuracy-x-32x32", lambda E: evaluate.accuracy(E.cnn, E.x32, E.y), ValueError, "x"),
    row("accuracy-linear-x-3-channels", lambda E: evaluate.accuracy(E.lin, E.x3, E.y), ValueError, "x"),
    row("accuracy-y-short", lambda E: evaluate.accuracy(E.lin, E.x, E.y[:-1]), ValueError, "y"),
    row("accuracy-y-float", lambda E: evaluate.accuracy(E.lin, E.x, E.y.float()), ValueError, "y"),
    row("accuracy-x-range", lambda E: evaluate.accuracy(E.lin, E.x * 2, E.y), ValueError, "x"),
    row("accuracy-x-numpy", lambda E: evaluate.accuracy(E.lin, E.x.numpy(), E.y), ValueError, "x"),
    row("accuracy-batch_size0", lambda E: evaluate.accuracy(E.lin, E.x, E.y, batch_size=0), ValueError, "batch_size"),
    row("accuracy-model-str", lambda E: evaluate.accuracy("fmnist/cnn", E.x, E.y), ValueError, "model"),
    row("predict-batch_size-negative", lambda E: evaluate.predict(E.lin, E.x, batch_size=-1), ValueError,
        "batch_size"),
    row("predict-x-3-channels", lambda E: evaluate.predict(E.cnn, E.x3), ValueError, "x"),
    row("robust_accuracy-attack-str", lambda E: evaluate.robust_accuracy(E.lin, E.x, E.y, attack="pgd"),
        ValueError, "attack"),
    row("robust_accuracy-short-attack",
        lambda E: evaluate.robust_accuracy(E.lin, E.x, E.y, _short_attack(attacks.FGSM(eps=0.1))),
        ValueError, "attack"),
    row("robust_report-attack-int", lambda E: evaluate.robust_report(E.lin, E.x, E.y, attack=3), ValueError,
        "attack"),
    row("robust_report-y-99", lambda E: evaluate.robust_report(E.lin, E.x, torch.full_like(E.y, 99),
                                                               lambda m, x, y: x), ValueError, "y"),
    row("defense_report-x-3-channels",
        lambda E: evaluate.defense_report(Blur(E.cnn), E.x3, E.y, attack=attacks.FGSM(eps=0.1), sanity_eps=(1.0,)),
        ValueError, "x"),
    row("defense_report-eot_iter0", lambda E: evaluate.defense_report(Blur(E.lin), E.x, E.y, eot_iter=0),
        ValueError, "eot_iter"),
    # ------------------------------------------------------------------ purifiers
    row("purify-x-3-channels", lambda E: Blur(E.cnn).purify(E.x3), ValueError, "x"),
    row("purify-x-32x32", lambda E: Blur(E.cnn).purify(E.x32), ValueError, "x"),
    row("forward-x-3-channels", lambda E: Blur(E.cnn)(E.x3), ValueError, "x"),
    row("forward-x-32x32", lambda E: Blur(E.cnn)(E.x32), ValueError, "x"),
    row("purify-linear-x-3-channels", lambda E: Blur(E.lin).purify(E.x3), ValueError, "x"),
    row("purify-x-3d", lambda E: Blur(E.lin).purify(E.x[0]), ValueError, "x"),
    row("purify-generator-int", lambda E: Blur(E.lin).purify(E.x, generator=5), ValueError, "generator"),
    row("adaptive_model-backward", lambda E: Blur(E.lin).adaptive_model("nope"), ValueError, "backward"),
    row("Defense-classifier-str", lambda E: Blur("model"), ValueError, "classifier"),
    row("Defense-seed-str", lambda E: Blur(E.lin, seed="a"), ValueError, "seed"),
    row("DefenseGAN-generator", lambda E: __import__("advlab.purifiers", fromlist=["x"]).DefenseGAN(
        nn.Linear(2, 2), E.lin), ValueError, "generator"),
    row("DefenseGAN-purify-x-3-channels", lambda E: _defense_gan(E).purify(E.x3), ValueError, "x"),
    row("DefenseGAN-search-x-32x32", lambda E: _defense_gan(E).search(E.x32), ValueError, "x"),
    row("DefenseGAN-steps-negative", lambda E: _defense_gan(E, steps=-1), ValueError, "steps"),
    row("VAEGAN-space", lambda E: _vaegan(E, space="pixel"), ValueError, "space"),
    row("VAEGAN-purify-x-3-channels", lambda E: _vaegan(E).purify(E.x3), ValueError, "x"),
    row("LQVAE-lqvae", lambda E: __import__("advlab.purifiers", fromlist=["x"]).LQVAE(nn.Linear(2, 2), E.lin),
        ValueError, "lqvae"),
    row("LQVAE-forward-x-32x32", lambda E: _lqvae(E)(E.x32), ValueError, "x"),
    row("LQVAE-code_flips-x_adv", lambda E: _lqvae(E).code_flips(E.x, E.x3), ValueError, "x_adv"),
    row("purifiers.get-unknown", lambda E: __import__("advlab.purifiers", fromlist=["x"]).get("nope"), ValueError,
        "name"),
    row("Defense.from_zoo-dataset", lambda E: Blur.from_zoo("cifar10"), ValueError, "dataset"),
    # ------------------------------------------------------------------ CLI
    row("cli-data-action", lambda E: _cli(E, "data", "bogus"), CLIExit, "action"),
    row("cli-evaluate-attack", lambda E: _cli(E, "evaluate", "fmnist/cnn", "--attack", "bogus"), CLIExit, "--attack"),
    row("cli-evaluate-n-text", lambda E: _cli(E, "evaluate", "fmnist/cnn", "--n", "abc"), CLIExit, "--n"),
    row("cli-train-unknown", lambda E: _cli(E, "train", "fmnist/nope"), CLIExit, "fmnist/nope"),
    row("cli-evaluate-unknown", lambda E: _cli(E, "evaluate", "fmnist/nope"), CLIExit, "fmnist/nope"),
    row("cli-evaluate-n0", lambda E: _cli(E, "evaluate", "fmnist/cnn", "--n", "0"), CLIExit, "--n"),
    row("cli-evaluate-n-negative", lambda E: _cli(E, "evaluate", "fmnist/cnn", "--n", "-5"), CLIExit, "--n"),
    row("cli-evaluate-n-too-many", lambda E: _cli(E, "evaluate", "fmnist/cnn", "--n", "20000"), CLIExit, "--n"),
    row("cli-evaluate-eps-negative", lambda E: _cli(E, "evaluate", "fmnist/cnn", "--n", "8", "--eps", "-1"), CLIExit,
        "--eps"),
    row("cli-evaluate-eps-nan", lambda E: _cli(E, "evaluate", "fmnist/cnn", "--n", "8", "--eps", "nan"), CLIExit,
        "--eps"),
    row("cli-evaluate-steps0", lambda E: _cli(E, "evaluate", "fmnist/cnn", "--n", "8", "--steps", "0"), CLIExit,
        "--steps"),
    row("cli-evaluate-chunk0", lambda E: _cli(E, "evaluate", "fmnist/cnn", "--n", "8", "--chunk", "0"), CLIExit,
        "--chunk"),
    row("cli-evaluate-device", lambda E: _cli(E, "evaluate", "fmnist/cnn", "--n", "8", "--device", "bogus"), CLIExit,
        "--device"),
    row("cli-defense-report-set", lambda E: _cli(E, "defense-report", "lqvae", "--n", "8", "--device", "cpu",
                                                 "--set", "bogus=1"), CLIExit, "--set"),
    row("cli-defense-report-device", lambda E: _cli(E, "defense-report", "lqvae", "--n", "8", "--device", "bogus"),
        CLIExit, "--device"),
    row("cli-train-set", lambda E: _cli(E, "train", "fmnist/mlp", "--profile", "quick", "--out", str(E.tmp / "z"),
                                        "--set", "bogus=1"), CLIExit, "--set"),
]


def _defense_gan(E, **kw):
    from advlab.generative import Generator
    from advlab.purifiers import DefenseGAN
    torch.manual_seed(0)
    return DefenseGAN(Generator(latent_dim=4, width=4), E.cnn, **(dict(steps=1, restarts=1) | kw)).eval()


def _vaegan(E, **kw):
    from advlab.purifiers import VAEGANPurifier
    from advlab.purifiers.vaegan.model import VAEGAN
    torch.manual_seed(0)
    return VAEGANPurifier(VAEGAN(latent_dim=4, width=4), E.cnn, **kw).eval()


def _lqvae(E):
    from advlab.purifiers import LQVAE
    from advlab.purifiers.lqvae.model import LQVAEModel
    torch.manual_seed(0)
    return LQVAE(LQVAEModel(latent_dim=4, width=4), E.cnn).eval()


def _names(message: str, name: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w])", message) is not None


@pytest.mark.parametrize("call, exc, name", ROWS)
def test_bad_input_raises_a_clear_error_naming_the_argument(E, call, exc, name):
    with pytest.raises(exc) as info:
        call(E)
    message = str(info.value)
    assert _names(message, name), f"the message does not name {name!r}: {message!r}"


def test_the_table_is_large_enough():
    assert len(ROWS) >= 60


# --------------------------------------------------------------------------------------- conversions

@pytest.mark.parametrize("kind", ["int32-labels", "float64-images"])
@pytest.mark.parametrize("name", list(FIT_ATTACKS))
def test_attacks_convert_label_and_image_dtypes(env, name, kind):
    x, y = env.x[:4], env.y[:4]
    xc, yc = (x, y.int()) if kind == "int32-labels" else (x.double(), y)
    x_adv = FIT_ATTACKS[name]()(env.cnn, xc, yc)
    assert x_adv.shape == x.shape and x_adv.dtype == xc.dtype


@pytest.mark.parametrize("kind", ["int32-labels", "float64-images"])
@pytest.mark.parametrize("fn", ["accuracy", "robust_accuracy"])
def test_metrics_convert_label_and_image_dtypes(env, fn, kind):
    x, y = env.x, env.y
    xc, yc = (x, y.int()) if kind == "int32-labels" else (x.double(), y)
    if fn == "accuracy":
        assert evaluate.accuracy(env.cnn, xc, yc) == evaluate.accuracy(env.cnn, x, y)
    else:
        atk = attacks.FGSM(eps=0.1, checks=False)
        assert evaluate.robust_accuracy(env.cnn, xc, yc, lambda m, a, b: a) == evaluate.accuracy(env.cnn, x, y)
        assert 0 <= evaluate.robust_accuracy(env.cnn, x, y, atk) <= 1


def test_purifiers_accept_float64_images(env):
    d = Blur(env.cnn)
    out = d.purify(env.x.double())
    assert out.shape == env.x.shape
    with torch.no_grad():
        assert d(env.x.double()).shape == (len(env.x), 10)


@pytest.mark.parametrize("fn", ["accuracy", "robust_accuracy", "robust_report"])
def test_metrics_restore_every_modules_own_train_flag(env, fn):
    """A model whose top level is in eval mode but one submodule (BatchNorm) in train mode keeps exactly
    those flags, and its BatchNorm statistics do not move (the measurement ran in eval mode)."""
    model = models.build("cnn", "synthetic").eval()
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    bn.train()
    flags = [m.training for m in model.modules()]
    stats = bn.running_mean.clone()
    ident = lambda m, x, y: x  # noqa: E731
    {"accuracy": lambda: evaluate.accuracy(model, env.x, env.y),
     "robust_accuracy": lambda: evaluate.robust_accuracy(model, env.x, env.y, ident),
     "robust_report": lambda: evaluate.robust_report(model, env.x, env.y, ident)}[fn]()
    assert [m.training for m in model.modules()] == flags
    assert torch.equal(bn.running_mean, stats)
