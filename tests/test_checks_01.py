"""advlab.checks for exercise set 01 (FGSM, projections, a PGD step, the targeted loss, PGD):
each check passes on the reference answer, fails with its specific diagnosis on a typical
mistake, and reports a blank (NotImplementedError / None) as pending."""
import pytest
import torch
import torch.nn.functional as F

from advlab import checks


# reference answers of exercise set 01 -------------------------------------------------------
def fgsm(model, x, y, eps):
    x_adv = x.clone().detach().requires_grad_(True)
    loss = F.cross_entropy(model(x_adv), y)
    grad, = torch.autograd.grad(loss, x_adv)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def project_linf(delta, eps):
    return delta.clamp(-eps, eps)


def project_l2(delta, eps):
    norms = delta.flatten(1).norm(dim=1).view(-1, *([1] * (delta.dim() - 1)))
    return delta * torch.clamp(eps / norms.clamp_min(1e-12), max=1.0)


def _unit(grad, norm):
    if norm == "linf":
        return grad.sign()
    return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))


def pgd_step(x_adv, x, grad, alpha, eps, norm):
    x_new = x_adv + alpha * _unit(grad, norm)
    delta = project_linf(x_new - x, eps) if norm == "linf" else project_l2(x_new - x, eps)
    return (x + delta).clamp(0, 1)


def targeted_loss(logits, target):
    return F.cross_entropy(logits, target, reduction="none")


def pgd(model, x, y, eps, alpha, steps, norm="linf", random_start=True):
    x_adv = x.clone()
    if random_start:
        noise = (2 * torch.rand_like(x) - 1) * eps if norm == "linf" else project_l2(torch.randn_like(x) * eps, eps)
        x_adv = (x + noise).clamp(0, 1)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = pgd_step(x_adv.detach(), x, grad, alpha, eps, norm)
    return x_adv.detach()


REFERENCE = [
    (checks.check_fgsm, fgsm),
    (checks.check_project_linf, project_linf),
    (checks.check_project_l2, project_l2),
    (checks.check_pgd_step, pgd_step),
    (checks.check_targeted_loss, targeted_loss),
    (checks.check_pgd, pgd),
]


@pytest.mark.parametrize("check,answer", REFERENCE, ids=lambda v: getattr(v, "__name__", repr(v)))
def test_reference_passes(check, answer, capsys):
    assert check(answer) is True
    out = capsys.readouterr().out
    assert out.startswith("✅ ") and checks.PENDING not in out


def test_targeted_margin_is_accepted(capsys):
    def margin(z, t):
        return z.scatter(1, t[:, None], float("-inf")).amax(1) - z.gather(1, t[:, None]).squeeze(1)
    assert checks.check_targeted_loss(margin) is True
    assert "targeted margin" in capsys.readouterr().out


def test_l2_step_may_clip_before_projecting():
    def clip_first(x_adv, x, grad, alpha, eps, norm):
        x_new = (x_adv + alpha * _unit(grad, norm)).clamp(0, 1)
        delta = project_linf(x_new - x, eps) if norm == "linf" else project_l2(x_new - x, eps)
        return x + delta
    assert checks.check_pgd_step(clip_first) is True


# wrong answers -------------------------------------------------------------------------------
def _grad(model, x, y):
    xr = x.clone().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
    return g


def _fgsm_in_place(model, x, y, eps):
    g = _grad(model, x, y)
    return x.add_(eps * g.sign()).clamp_(0, 1)


def _fgsm_requires_grad_on_x(model, x, y, eps):
    x.requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x + eps * g.sign()).clamp(0, 1).detach()


def _fgsm_random_direction(model, x, y, eps):
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    return (x + eps * g.sign()).clamp(0, 1)


def _fgsm_predicted_class_logit(model, x, y, eps):  # gradient of the wrong quantity
    xr = x.clone().requires_grad_(True)
    g, = torch.autograd.grad(model(xr).sum(), xr)
    return (x + eps * g.sign()).clamp(0, 1)


def _fgsm_reverts_instead_of_clipping(model, x, y, eps):
    x_adv = x + eps * _grad(model, x, y).sign()
    return torch.where((x_adv < 0) | (x_adv > 1), x, x_adv)


def _project_linf_in_place(delta, eps):
    return delta.clamp_(-eps, eps)


def _project_l2_nan(delta, eps):
    norms = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return delta / norms * torch.clamp(norms, max=eps)


def _pgd_step_in_place(x_adv, x, grad, alpha, eps, norm):
    x_adv += alpha * _unit(grad, norm)
    return x + project_linf(x_adv - x, eps) if norm == "linf" else x + project_l2(x_adv - x, eps)


WRONG = [  # (check, wrong answer, words the diagnosis must contain)
    (checks.check_fgsm, lambda m, x, y, e: x + e * _grad(m, x, y).sign(), "leaves the [0,1] box at"),
    (checks.check_fgsm, lambda m, x, y, e: (x + e / 2 * _grad(m, x, y).sign()).clamp(0, 1),
     "moved pixels by 0.05 instead of eps=0.1: did you multiply the sign by eps?"),
    (checks.check_fgsm, lambda m, x, y, e: (x + _grad(m, x, y).sign()).clamp(0, 1),
     "moved pixels by 1 instead of eps=0.1"),
    (checks.check_fgsm, lambda m, x, y, e: (x - e * _grad(m, x, y).sign()).clamp(0, 1), "descends the loss (mean loss went from"),
    (checks.check_fgsm, lambda m, x, y, e: (x + e * _grad(m, x, y)).clamp(0, 1), "raw gradient"),
    (checks.check_fgsm, lambda m, x, y, e: e * _grad(m, x, y).sign(), "returned the perturbation"),
    (checks.check_fgsm, lambda m, x, y, e: (x + 0.1 * _grad(m, x, y).sign()).clamp(0, 1), "hard-code"),
    (checks.check_fgsm, lambda m, x, y, e: x + e * _grad(m, x, y).sign().clamp(0, 1) * 0 + 0 * x, "x unchanged"),
    (checks.check_fgsm, _fgsm_random_direction, "at only"),
    (checks.check_fgsm, _fgsm_predicted_class_logit, "at only"),
    (checks.check_fgsm, _fgsm_in_place, "modified its input x in place"),
    (checks.check_fgsm, _fgsm_requires_grad_on_x, "switched on requires_grad"),
    (checks.check_fgsm, lambda m, x, y, e: (x.clone().requires_grad_(True) + e).clamp(0, 1), "still requires grad"),
    (checks.check_fgsm, lambda m, x, y, e: ((x + e * _grad(m, x, y).sign()).clamp(0, 1), 1), "returned a tuple"),
    (checks.check_fgsm, _fgsm_reverts_instead_of_clipping, "next to them"),
    (checks.check_project_linf, lambda d, e: d.clamp(max=e), "only clips from above"),
    (checks.check_project_linf, lambda d, e: d.clamp(0, e), "clamps to [0, eps]"),
    (checks.check_project_linf, lambda d, e: e * d.sign(), "FGSM's step"),
    (checks.check_project_linf, lambda d, e: d * e / d.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1),
     "rescales whole examples"),
    (checks.check_project_linf, project_l2, "computes the L2 projection"),
    (checks.check_project_linf, _project_linf_in_place, "modified its input delta in place"),
    (checks.check_project_linf, lambda d, e: d.clamp(-0.1, 0.1), "don't hard-code"),
    (checks.check_project_l2, lambda d, e: d * e / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1),
     "also rescales vectors already inside the ball"),
    (checks.check_project_l2, lambda d, e: d * e / (d.flatten(1).norm(dim=1) + e).view(-1, 1, 1, 1),
     "also shrinks vectors already inside the ball"),
    (checks.check_project_l2, _project_l2_nan, "returns NaN for example 1 (a zero perturbation)"),
    (checks.check_project_l2, lambda d, e: d * min(1.0, e / float(d.norm())), "one norm for the whole batch"),
    (checks.check_project_l2, lambda d, e: d * torch.clamp(e / d.flatten(1).norm(dim=1).clamp_min(1e-12), max=1),
     "reshape them to (N, 1, 1, 1)"),
    (checks.check_project_l2, project_linf, "computes the L∞ projection"),
    (checks.check_project_l2,
     lambda d, e: d * torch.clamp(e / d.flatten(1).norm(dim=1).pow(2).clamp_min(1e-12), max=1).view(-1, 1, 1, 1),
     "squared norm"),
    (checks.check_pgd_step, lambda xa, x, g, a, e, n: pgd_step(xa, x, -g, a, e, n),
     "your PGD step descends the loss (loss went from"),
    (checks.check_pgd_step, lambda xa, x, g, a, e, n: (xa + a * _unit(g, n)).clamp(0, 1), "leaves the eps-ball"),
    (checks.check_pgd_step, lambda xa, x, g, a, e, n: pgd_step(x, x, g, a, e, n), "stepped from x"),
    (checks.check_pgd_step,
     lambda xa, x, g, a, e, n: (xa + (project_linf if n == "linf" else project_l2)(a * _unit(g, n), e)).clamp(0, 1),
     "not only the step"),
    (checks.check_pgd_step,
     lambda xa, x, g, a, e, n: x + (project_linf if n == "linf" else project_l2)(xa + a * _unit(g, n) - x, e),
     "leaves the [0,1] box at"),
    (checks.check_pgd_step, lambda xa, x, g, a, e, n: pgd_step(xa, x, g, e, e, n), "steps of size alpha"),
    (checks.check_pgd_step, lambda xa, x, g, a, e, n: pgd_step(xa, x, g, a, e, "linf") if n == "linf" else
     (x + project_l2(xa + a * g.sign() - x, e)).clamp(0, 1), "wrong step direction"),
    (checks.check_pgd_step, lambda xa, x, g, a, e, n: pgd_step(xa, x, g, a, e, "linf") if n == "linf" else
     (x + project_l2(xa + a * g - x, e)).clamp(0, 1), "normalise the gradient of each example"),
    (checks.check_pgd_step, lambda xa, x, g, a, e, n: pgd_step(xa, x, g, a, e, "linf") if n == "linf" else
     (x + project_l2(xa + a * g / g.norm() - x, e)).clamp(0, 1), "norm of the whole batch"),
    (checks.check_pgd_step, _pgd_step_in_place, "modified its input x_adv in place"),
    (checks.check_pgd_step, lambda xa, x, g, a, e, n: pgd_step(xa, x, g, a, e, "linf") if n == "linf" else
     (x + project_linf(xa + a * _unit(g, n) - x, e)).clamp(0, 1), "onto the l2 ball"),
    (checks.check_pgd_step, lambda xa, x, g, a, e, n: (x + project_l2(xa + a * _unit(g, n) - x, e)).clamp(0, 1),
     "wrong projection: project with the linf ball"),
    (checks.check_targeted_loss, lambda z, t: -F.cross_entropy(z, t, reduction="none"), "makes the target *less* likely"),
    (checks.check_targeted_loss, lambda z, t: F.cross_entropy(z, t), "returns a single number (the batch mean"),
    (checks.check_targeted_loss, lambda z, t: F.cross_entropy(z.softmax(1), t, reduction="none"), "softmax before"),
    (checks.check_targeted_loss, lambda z, t: F.nll_loss(z, t, reduction="none"), "misses the log-softmax"),
    (checks.check_targeted_loss, lambda z, t: -z.softmax(1).gather(1, t[:, None]).squeeze(1), "gradient vanishes"),
    (checks.check_targeted_loss, lambda z, t: F.cross_entropy(z, t, reduction="none").detach(), "not differentiable"),
    (checks.check_targeted_loss, lambda z, t: F.cross_entropy(z, t, reduction="none").item() if len(z) == 1 else
     float(F.cross_entropy(z, t).detach()), "Python number"),
    (checks.check_targeted_loss, lambda z, t: F.cross_entropy(z, z.argmax(1), reduction="none"), "ignores the target"),
    (checks.check_pgd, lambda m, x, y, e, a, s, n="linf", r=True: pgd(m, x, y, e, a, 1, n, r), "stops after one step"),
    (checks.check_pgd, lambda m, x, y, e, a, s, n="linf", r=True: pgd(m, x, y, e, a, s, n, False), "ignores random_start"),
    (checks.check_pgd, lambda m, x, y, e, a, s, n="linf", r=True: x.clone(), "returned x unchanged"),
]


def _pgd_reusing_first_gradient(model, x, y, eps, alpha, steps, norm="linf", random_start=True):
    g = _grad(model, x, y)
    x_adv = x.clone()
    for _ in range(steps):
        x_adv = pgd_step(x_adv, x, g, alpha, eps, norm)
    return x_adv


def _pgd_descending(model, x, y, eps, alpha, steps, norm="linf", random_start=True):
    x_adv = x.clone()
    for _ in range(steps):
        x_adv = pgd_step(x_adv, x, -_grad(model, x_adv, y), alpha, eps, norm)
    return x_adv


def _pgd_same_start(model, x, y, eps, alpha, steps, norm="linf", random_start=True):
    if random_start:
        g = torch.Generator().manual_seed(0)
        x = (x + project_linf((2 * torch.rand(x.shape, generator=g) - 1) * eps, eps)).clamp(0, 1) if norm == "linf" \
            else x
    return pgd(model, x, y, eps, alpha, steps, norm, False) if not random_start else \
        pgd_step(x, x, torch.ones_like(x), 1e-3, eps, norm)


WRONG += [
    (checks.check_pgd, _pgd_reusing_first_gradient, "reuses the gradient at x"),
    (checks.check_pgd, _pgd_descending, "descends the loss"),
]


@pytest.mark.parametrize("check,answer,words", WRONG, ids=[w[2][:30] for w in WRONG])
def test_wrong_answer_gets_specific_diagnosis(check, answer, words):
    with pytest.raises(AssertionError) as err:
        check(answer)
    msg = str(err.value)
    assert msg.startswith("❌ ")
    assert words in msg, msg
    assert checks.RESULTS[check.__name__.removeprefix("check_")] == "failed"


def test_pgd_with_a_fixed_random_start_is_caught():
    def pgd_seeded(model, x, y, eps, alpha, steps, norm="linf", random_start=True):
        if random_start:
            torch.manual_seed(123)
        return pgd(model, x, y, eps, alpha, steps, norm, random_start)
    with pytest.raises(AssertionError, match="same result on two calls"):
        checks.check_pgd(pgd_seeded)


@pytest.mark.parametrize("check", [c for c, _ in REFERENCE], ids=lambda c: c.__name__)
def test_blank_is_pending(check, capsys):
    def blank(*args, **kwargs):
        # YOUR CODE HERE
        raise NotImplementedError

    assert check(blank) is False
    assert check(None) is False
    assert capsys.readouterr().out == f"{checks.PENDING}\n" * 2
    assert checks.RESULTS[check.__name__.removeprefix("check_")] == "pending"


def test_pgd_built_on_a_blank_step_is_pending(capsys):
    def pgd_step_blank(*args):
        raise NotImplementedError

    def pgd_on_blank(model, x, y, eps, alpha, steps, norm="linf", random_start=True):
        return pgd_step_blank(x, x, x, alpha, eps, norm)
    assert checks.check_pgd(pgd_on_blank) is False
    assert capsys.readouterr().out == checks.PENDING + "\n"


def test_checks_leave_the_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    checks.check_pgd(pgd)
    checks.check_fgsm(fgsm)
    assert torch.equal(torch.rand(3), expected)
