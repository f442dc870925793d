"""advlab.checks: every exercise check passes on the reference answer, fails with a specific
diagnosis on a typical mistake, and reports a blank (NotImplementedError / None) as pending."""
import math

import pytest
import torch

from advlab import checks


# reference answers of exercise set 00 -------------------------------------------------------
def linf_norm(delta):
    return delta.flatten(1).abs().amax(1)


def l2_norm(delta):
    return delta.flatten(1).norm(dim=1)


def in_threat_model(x, x_adv, eps, norm):
    size = linf_norm(x_adv - x) if norm == "linf" else l2_norm(x_adv - x)
    return (size <= eps + 1e-6) & ((x_adv >= 0) & (x_adv <= 1)).flatten(1).all(1)


def random_linf_perturbation(x, eps):
    return (x + (2 * torch.rand_like(x) - 1) * eps).clamp(0, 1)


REFERENCE = [
    (checks.check_linf_norm, linf_norm),
    (checks.check_l2_norm, l2_norm),
    (checks.check_in_threat_model, in_threat_model),
    (checks.check_random_linf_perturbation, random_linf_perturbation),
    (checks.check_corner_l2, 0.1 * math.sqrt(784)),
    (checks.check_corner_l2, lambda eps, d: eps * math.sqrt(d)),       # the function of the exercise
]


@pytest.mark.parametrize("check,answer", REFERENCE, ids=lambda v: getattr(v, "__name__", repr(v)))
def test_reference_passes(check, answer, capsys):
    assert check(answer) is True
    out = capsys.readouterr().out
    assert out.startswith("✅ ") and checks.PENDING not in out


def _in_place_norm(delta):
    delta.abs_()
    return delta.flatten(1).amax(1)


WRONG = [  # (check, wrong answer, words the diagnosis must contain)
    (checks.check_linf_norm, lambda d: d.flatten(1).amax(1), "ignores negative entries"),
    (checks.check_linf_norm, lambda d: d.abs().max(), "single number for the whole batch"),
    (checks.check_linf_norm, lambda d: d.flatten(1).norm(dim=1), "computes the L2 norm"),
    (checks.check_linf_norm, lambda d: d.reshape(-1, 784).abs().amax(1), "raised RuntimeError"),
    (checks.check_linf_norm, _in_place_norm, "modified its input delta in place"),
    (checks.check_l2_norm, lambda d: d.flatten(1).pow(2).sum(1), "forget the square root"),
    (checks.check_l2_norm, lambda d: d.flatten(1).abs().sum(1), "L1 norm"),
    (checks.check_l2_norm, lambda d: d.norm(), "single number"),
    (checks.check_in_threat_model,
     lambda x, xa, e, n: (linf_norm(xa - x) if n == "linf" else l2_norm(xa - x)) <= e + 1e-6,
     "box constraint"),
    (checks.check_in_threat_model, lambda x, xa, e, n: in_threat_model(x, xa, e - 1e-6, n), "float rounding"),
    (checks.check_in_threat_model, lambda x, xa, e, n: in_threat_model(x, xa, e, "linf"), "measure the linf norm"),
    (checks.check_in_threat_model, lambda x, xa, e, n: in_threat_model(x, xa, e, n).float(), "return booleans"),
    (checks.check_in_threat_model, lambda x, xa, e, n: bool(in_threat_model(x, xa, e, n).all()), "single bool"),
    (checks.check_random_linf_perturbation, lambda x, e: x + (2 * torch.rand_like(x) - 1) * e,
     "leaves the [0,1] box at"),
    (checks.check_random_linf_perturbation, lambda x, e: (x + (2 * torch.rand_like(x) - 1) * 2 * e).clamp(0, 1),
     "leaves the eps-ball: max |delta| = 0.2 > eps = 0.1 at"),
    (checks.check_random_linf_perturbation, lambda x, e: (x + torch.rand_like(x) * e).clamp(0, 1), "same sign"),
    (checks.check_random_linf_perturbation, lambda x, e: (x + torch.randn_like(x).sign() * e).clamp(0, 1),
     "corner of the ball"),
    (checks.check_random_linf_perturbation, lambda x, e: (x + (torch.randn_like(x) * e).clamp(-e, e)).clamp(0, 1),
     "not uniform"),
    (checks.check_random_linf_perturbation, lambda x, e: (x + (2 * torch.rand(1) - 1) * e).clamp(0, 1),
     "same random number to every pixel"),
    (checks.check_random_linf_perturbation, lambda x, e: x.add_((2 * torch.rand_like(x) - 1) * e).clamp_(0, 1),
     "modified its input x in place"),
    (checks.check_random_linf_perturbation, lambda x, e: x.clone(), "unchanged"),
    (checks.check_corner_l2, 0.1 * 784, "square root"),
    (checks.check_corner_l2, 0.1, "Linf norm"),
    (checks.check_corner_l2, "2.8", "should be a number"),
]


@pytest.mark.parametrize("check,answer,words", WRONG, ids=[w[2][:30] for w in WRONG])
def test_wrong_answer_gets_specific_diagnosis(check, answer, words):
    with pytest.raises(AssertionError) as err:
        check(answer)
    msg = str(err.value)
    assert msg.startswith("❌ ")
    assert words in msg, msg
    assert checks.RESULTS[check.__name__.removeprefix("check_")] == "failed"


@pytest.mark.parametrize("check", [c for c, _ in REFERENCE], ids=lambda c: c.__name__)
def test_blank_is_pending(check, capsys):
    def blank(*args, **kwargs):
        # YOUR CODE HERE
        raise NotImplementedError

    assert check(blank) is False
    assert check(None) is False
    out = capsys.readouterr().out
    assert out == f"{checks.PENDING}\n" * 2
    assert checks.RESULTS[check.__name__.removeprefix("check_")] == "pending"


def test_pending_message_text():
    assert checks.PENDING == "⏳ not implemented yet — fill in the blank above"


def test_run_check(capsys):
    def blank(x):
        raise NotImplementedError

    assert checks.run_check(blank, 1) is None
    assert capsys.readouterr().out == checks.PENDING + "\n"
    assert checks.run_check(lambda a, b=0: a + b, 1, b=2) == 3
    with pytest.raises(ValueError):
        checks.run_check(lambda: (_ for _ in ()).throw(ValueError("real bug")))


def test_registry_and_summary(capsys):
    for name in ("linf_norm", "l2_norm", "in_threat_model", "random_linf_perturbation", "corner_l2"):
        assert name in checks.CHECKS and checks.CHECKS[name].__name__ == f"check_{name}"
    checks.check_linf_norm(linf_norm)
    checks.check_l2_norm(None)
    capsys.readouterr()
    status = checks.summary(["linf_norm", "l2_norm", "never_run"])
    assert status == {"linf_norm": "passed", "l2_norm": "pending", "never_run": "not run"}
    out = capsys.readouterr().out
    assert out.startswith("1/3 checks passed, 1 pending, 1 not run")


def test_checks_leave_global_rng_alone():
    state = torch.get_rng_state()
    checks.check_random_linf_perturbation(random_linf_perturbation)
    assert torch.equal(state, torch.get_rng_state())


def test_check_output_is_deterministic(capsys):
    checks.check_random_linf_perturbation(random_linf_perturbation)
    first = capsys.readouterr().out
    torch.rand(5)  # whatever the notebook did before
    checks.check_random_linf_perturbation(random_linf_perturbation)
    assert capsys.readouterr().out == first


def test_not_a_function():
    with pytest.raises(AssertionError, match="expected a function"):
        checks.check_linf_norm(torch.zeros(3))


# the standard diagnoses later lectures reuse ---------------------------------------------------
def test_assert_in_ball_counts_pixels():
    x = torch.full((2, 1, 4, 4), 0.5)
    x_adv = x.clone()
    x_adv[0, 0, :2, :2] += 0.13
    with pytest.raises(AssertionError, match=r"max \|delta\| = 0.13 > eps = 0.1 at 4 pixels"):
        checks.assert_in_ball(x, x_adv, 0.1, "linf", "your projection")
    checks.assert_in_ball(x, x_adv, 0.13 + 1e-6, "linf", "ok")
    with pytest.raises(AssertionError, match=r"L2 eps-ball at 1 of 2 examples: largest \|\|delta\|\|_2 = 0.26"):
        checks.assert_in_ball(x, x_adv, 0.2, "l2", "your projection")


def test_assert_in_box_counts_pixels():
    x = torch.full((1, 1, 10, 10), 0.5)
    x[0, 0, 0, :7] = 1.2
    with pytest.raises(AssertionError, match=r"your FGSM leaves the \[0,1\] box at 7 pixels"):
        checks.assert_in_box(x, "your FGSM")


def test_assert_tensor_and_close():
    with pytest.raises(AssertionError, match="returned a list"):
        checks.assert_tensor([1, 2], "your f", shape=(2,))
    with pytest.raises(AssertionError, match=r"returned shape \(3,\), expected \(2,\)"):
        checks.assert_tensor(torch.zeros(3), "your f", shape=(2,))
    with pytest.raises(AssertionError, match="dtype"):
        checks.assert_tensor(torch.zeros(2, dtype=torch.float64), "your f", like=torch.zeros(2))
    with pytest.raises(AssertionError, match="wrong at 1 of 3 entries, e.g. entry 2: got 5, expected 3"):
        checks.assert_close(torch.tensor([1.0, 2.0, 5.0]), torch.tensor([1.0, 2.0, 3.0]), "your f")


def test_fixed_images_are_fixed_and_saturated():
    a, b = checks.fixed_images(4, seed=7), checks.fixed_images(4, seed=7)
    assert torch.equal(a, b)
    assert a.min() == 0 and a.max() == 1 and ((a > 0) & (a < 1)).any()
