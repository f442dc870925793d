"""Bad input through the attacks (issue 15): every case reproduced here first failed with a deep torch
error, a wrong answer, or blamed the wrong argument. Each asserts a ValueError whose message names the
argument (or, for the documented conversions, the sensible result)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import advlab.attacks as A
from advlab import metrics

pytestmark = [pytest.mark.filterwarnings("ignore::RuntimeWarning"), pytest.mark.usefixtures("one_thread")]

NAMES = ["FGSM", "PGD", "BIM", "CW", "DeepFool", "Transfer", "APGD", "APGDT", "FAB", "Square", "AutoAttack"]


def cnn(channels=1, size=28, classes=10, seed=0) -> nn.Module:
    """A tiny conv net that declares what it takes (as the zoo's classifiers do)."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(channels, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * ((size + 1) // 2) ** 2, classes))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    net.input_shape = (channels, size, size)
    return net.eval()


def make(name, model_for_transfer=None):
    """A small, fast instance of each attack (L2 for CW, Linf for the others)."""
    small = dict(steps=2)
    return {
        "FGSM": lambda: A.FGSM(eps=0.1),
        "PGD": lambda: A.PGD(eps=0.1, alpha=0.05, **small),
        "BIM": lambda: A.BIM(eps=0.1, alpha=0.05, **small),
        "CW": lambda: A.CW(steps=3, eps=1.0),
        "DeepFool": lambda: A.DeepFool(steps=2, eps=0.1, norm="linf"),
        "Transfer": lambda: A.Transfer(A.PGD(eps=0.1, alpha=0.05, steps=2), model_for_transfer or cnn(seed=7)),
        "APGD": lambda: A.APGD(0.1, **small),
        "APGDT": lambda: A.APGDT(0.1, n_target_classes=2, **small),
        "FAB": lambda: A.FAB(0.1, **small),
        "Square": lambda: A.Square(0.1, n_queries=10),
        "AutoAttack": lambda: A.AutoAttack(0.1, steps=2, n_queries=10),
    }[name]()


def batch(model, n=3, shape=(1, 28, 28), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *shape), generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y


def check_ball(x_adv, x, eps=0.1, norm="linf"):
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    d = (x_adv.double() - x.double()).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert float(size.max()) <= eps


# ---------------------------------------------------------------------------------------------
# inputs that do not fit the model


@pytest.mark.parametrize("name", NAMES)
def test_three_channels_into_a_one_channel_model(name):
    model = cnn()
    x, y = batch(model)
    x3 = x.expand(-1, 3, -1, -1).contiguous()
    with pytest.raises(ValueError, match=r"^x: .*1-channel.*3 channels"):
        make(name)(model, x3, y)


@pytest.mark.parametrize("name", NAMES)
def test_32x32_into_a_28x28_model(name):
    model = cnn()
    _, y = batch(model)
    x32 = torch.rand(3, 1, 32, 32)
    with pytest.raises(ValueError, match=r"^x: .*28x28.*32x32"):
        make(name)(model, x32, y)


@pytest.mark.parametrize("name", NAMES)
def test_labels_beyond_the_models_outputs(name):
    model = cnn(classes=3)
    x, _ = batch(model)
    y = torch.tensor([0, 5, 9])  # labels of a 10-class dataset against a 3-class model
    with pytest.raises(ValueError, match=r"^y: .*\[0, 3\)"):
        make(name, model_for_transfer=cnn(classes=3, seed=7))(model, x, y)


def test_transfer_checks_x_against_the_target_model():
    """Transfer checks x against the target model (never queried) before attacking the substitute."""
    model = cnn()
    x, y = batch(model)
    with pytest.raises(ValueError, match=r"^x: .*1-channel"):
        make("Transfer")(model, x.expand(-1, 3, -1, -1), y)


# ---------------------------------------------------------------------------------------------
# documented conversions: int32 labels, float64 / float16 images into a float32 model


@pytest.mark.parametrize("name", NAMES)
def test_int32_labels_are_converted(name):
    model = cnn()
    x, y = batch(model)
    out = make(name)(model, x, y.to(torch.int32))
    norm = "l2" if name == "CW" else "linf"
    check_ball(out, x, 1.0 if name == "CW" else 0.1, norm)
    ref = make(name)(model, x, y)
    assert torch.equal(out, ref), "int32 labels must give the result of the same int64 labels"


@pytest.mark.parametrize("name", NAMES)
def test_float64_images_into_a_float32_model(name):
    model = cnn()
    x, y = batch(model)
    out = make(name)(model, x.double(), y)
    assert out.dtype == torch.float64  # x_adv has x's dtype (the contract) ...
    check_ball(out, x.double(), 1.0 if name == "CW" else 0.1, "l2" if name == "CW" else "linf")
    # ... and is the float32 computation, cast back
    ref = make(name)(model, x, y)
    assert torch.allclose(out.float(), ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_other_integer_label_dtypes(name):
    model = cnn()
    x, y = batch(model)
    for dt in (torch.uint8, torch.int16):
        make(name)(model, x, y.to(dt))


# ---------------------------------------------------------------------------------------------
# attacks called inside torch.no_grad() / torch.inference_mode()


@pytest.mark.parametrize("name", NAMES)
def test_attacks_work_inside_no_grad(name):
    model = cnn()
    x, y = batch(model)
    ref = make(name)(model, x, y)
    with torch.no_grad():
        out = make(name)(model, x, y)
    assert torch.equal(out, ref)
    with torch.no_grad():  # the caller's mode is restored
        make(name)(model, x, y)
        assert not torch.is_grad_enabled()


@pytest.mark.parametrize("name", ["PGD", "APGD", "AutoAttack"])
def test_attacks_work_inside_inference_mode(name):
    model = cnn()
    x, y = batch(model)
    ref = make(name)(model, x, y)
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()  # inference tensors, as a caller's evaluation loop makes them
        out = make(name)(model, xi, yi)
        assert torch.is_inference_mode_enabled()
    assert torch.equal(out, ref)


# ---------------------------------------------------------------------------------------------
# the model itself


def test_model_that_returns_no_logits():
    x = torch.rand(3, 1, 28, 28)
    y = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^model: .*logits"):
        A.PGD(eps=0.1, steps=1)(lambda v: v.flatten(1).sum(1), x, y)
    with pytest.raises(ValueError, match=r"^model: "):
        A.PGD(eps=0.1, steps=1)(None, x, y)


def test_unknown_or_positional_shared_options():
    with pytest.raises(TypeError, match="sed"):
        A.PGD(eps=0.1, sed=1)
    with pytest.raises(TypeError):  # seed, chunk_size, checks, amp are keyword-only
        A.FGSM(0.1, "linf", False, 1, 0)
    for name, bad in (("checks", "yes"), ("amp", 1), ("seed", "a"), ("chunk_size", 0)):
        with pytest.raises(ValueError, match=rf"^{name}: "):
            A.PGD(eps=0.1, **{name: bad})


# ---------------------------------------------------------------------------------------------
# metrics.robust_accuracy / robust_report: the attack argument


def test_robust_accuracy_with_an_attack_name():
    model = cnn()
    x, y = batch(model)
    for fn in (metrics.robust_accuracy, metrics.robust_report):
        with pytest.raises(ValueError, match=r"^attack: expected .*callable.*\(model, x, y\).*got .*'pgd'"):
            fn(model, x, y, attack="pgd")


def test_robust_accuracy_blames_an_attack_that_drops_rows():
    model = cnn()
    x, y = batch(model, n=4)
    for fn in (metrics.robust_accuracy, metrics.robust_report):
        with pytest.raises(ValueError, match=r"^attack: .*returned .*\b3\b.*\b4\b"):
            fn(model, x, y, attack=lambda m, xx, yy: xx[:3])
        with pytest.raises(ValueError, match=r"^attack: "):
            fn(model, x, y, attack=lambda m, xx, yy: xx.flatten(1))
        with pytest.raises(ValueError, match=r"^attack: "):
            fn(model, x, y, attack=lambda m, xx, yy: None)
