"""Checks for exercise set 01: FGSM, the L∞ and L2 projections, one PGD step, the targeted loss, and
PGD assembled from the step.

The attacks run on a small fixed MLP (`_toy_classifier`, seeded weights, tanh so that every pixel
has a nonzero input gradient) and on images with saturated 0 and 1 pixels, where clipping to the
box matters. Offline, deterministic and fast, that lets the checks compare pixel for pixel: FGSM
with clip(x + eps·sign(∇ₓ CE), 0, 1) (Goodfellow, Shlens & Szegedy, "Explaining and Harnessing
Adversarial Examples"), PGD without random start with advlab.attacks.BIM. On a mismatch each check
recomputes the usual wrong variants (descending the loss, no projection, no clipping, stepping
from x instead of the iterate, a batch-wide norm, the other norm's step or projection) and says
which one the answer equals. The exercise-03 checks reuse the same toy classifier and batches.
"""
from __future__ import annotations

import functools

import torch

from .framework import (
    _matches, _no_grad_leak, _untouched_requires_grad, assert_close, assert_in_ball, assert_in_box, assert_tensor,
    call_student, fail, fixed_images, register,
)


@functools.lru_cache(maxsize=1)
def _toy_classifier() -> torch.nn.Module:
    """A small fixed MLP (784-64-10, tanh), weights from a fixed seed, in eval mode. The exercise-01
    checks run students' attacks on it: fast, offline, deterministic, and its input gradient is
    nonzero at every pixel (so every pixel of an FGSM step moves)."""
    nn = torch.nn
    g = torch.Generator().manual_seed(101)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.Tanh(), nn.Linear(64, 10))
    with torch.no_grad():
        for p, scale in zip(net.parameters(), (1.0 / 28, 0.5, 0.8, 0.5)):
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return net.eval().requires_grad_(False)


def _toy_batch(n: int = 8, seed: int = 11):
    """Images (with exact 0s and 1s) and the toy classifier's own predictions as labels, so the
    loss starts low and an attack has something to increase."""
    x = fixed_images(n, seed=seed)
    with torch.no_grad():
        y = _toy_classifier()(x).argmax(1)
    return x, y


def _toy_grad(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F
    xr = x.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(_toy_classifier()(xr), y, reduction="sum")
        g, = torch.autograd.grad(loss, xr)
    return g


def _toy_loss(x: torch.Tensor, y: torch.Tensor) -> float:
    import torch.nn.functional as F
    with torch.no_grad():
        return F.cross_entropy(_toy_classifier()(x), y).item()


def _size_hint(e: AssertionError) -> AssertionError:
    """Add the broadcasting hint to a 'raised RuntimeError: The size of tensor a ...' diagnosis."""
    msg = str(e).removeprefix("❌ ")
    if "RuntimeError" in msg and "size of tensor" in msg:
        return fail(msg + " — hint: per-example norms have shape (N,); reshape them to (N, 1, 1, 1) "
                          "(e.g. norms.view(-1, 1, 1, 1)) to scale a batch of shape (N, C, H, W)")
    return e


@register
def check_fgsm(student, eps: float = 0.1) -> str:
    """Exercise 01.1: fgsm(model, x, y, eps) -> x_adv = clip(x + eps * sign(∇ₓ CE(model(x), y)), 0, 1)."""
    what = "your fgsm"
    model = _toy_classifier()
    x, y = _toy_batch(8, seed=11)
    out = call_student(student, model, x, y, eps, what=what)
    _untouched_requires_grad(x, what)
    if isinstance(out, tuple):
        raise fail(f"{what} returned a tuple of {len(out)} things; return only the adversarial images x_adv")
    assert_tensor(out, what, like=x)
    _no_grad_leak(out, what)
    out = out.detach()
    g = _toy_grad(x, y)
    s = g.sign()
    ref = (x + eps * s).clamp(0, 1)
    if not _matches(out, ref):
        l0, l1 = _toy_loss(x, y), _toy_loss(out.clamp(0, 1), y)
        if _matches(out, eps * s) or _matches(out, ref - x):
            raise fail(f"{what} returned the perturbation δ = eps·sign(∇), not the image: return "
                       f"(x + δ).clamp(0, 1)")
        if _matches(out, (x - eps * s).clamp(0, 1)) or _matches(out, x - eps * s):
            raise fail(f"{what} descends the loss (mean loss went from {l0:.3f} to {l1:.3f}): x - eps·sign(∇) makes "
                       f"the model more confident; an untargeted attack steps along +sign(∇ₓ loss)")
        if _matches(out, (x + s).clamp(0, 1)) or _matches(out, x + s):
            raise fail(f"{what} moved pixels by 1 instead of eps={eps:g}: did you multiply the sign by eps?")
        interior = (x >= eps + 1e-4) & (x <= 1 - eps - 1e-4)       # pixels where clipping cannot act
        d = (out - x)[interior]
        if bool((d.abs() < 1e-7).all()):
            raise fail(f"{what} returned x unchanged (away from the black and white pixels nothing moved): did the "
                       f"gradient come out as zero or None? Take it with respect to a copy of x that requires grad")
        if float(d.abs().max() - d.abs().min()) < 1e-5 and abs(float(d.abs().mean()) - eps) > 1e-5:
            raise fail(f"{what} moved pixels by {float(d.abs().mean()):.3g} instead of eps={eps:g}: did you multiply "
                       f"the sign by eps?")
        gi = g[interior]
        cos = float((d * gi).sum() / (d.norm() * gi.norm()).clamp_min(1e-12))
        if cos > 0.999 and float(d.abs().max() - d.abs().min()) >= 1e-5:
            raise fail(f"{what} steps along eps·∇ (the raw gradient), so pixels move by very different amounts (from "
                       f"{float(d.abs().min()):.2g} to {float(d.abs().max()):.2g}): FGSM takes the sign, "
                       f"x + eps·sign(∇), so every pixel moves by exactly eps")
        if float(d.abs().max() - d.abs().min()) >= 1e-5:
            raise fail(f"away from 0 and 1 every pixel of an FGSM image moves by exactly eps={eps:g}, yours by "
                       f"{float(d.abs().min()):.3g} to {float(d.abs().max()):.3g}: use eps·sign(gradient)")
        agree = float((d.sign() == s[interior]).float().mean())
        if agree < 0.999:
            raise fail(f"{what} steps along sign(∇ₓ loss) at only {100 * agree:.0f}% of the pixels (mean loss went "
                       f"from {l0:.3f} to {l1:.3f}): take the gradient of F.cross_entropy(model(x_adv), y) with "
                       f"respect to the input (x_adv = x.clone().requires_grad_(True)), with the true labels y")
        assert_in_ball(x, out, eps, "linf", what)
        assert_in_box(out, what)
        bad = ~torch.isclose(out, ref, atol=1e-5)
        raise fail(f"{what} is right away from the black and white pixels but wrong at {int(bad.sum())} pixels next "
                   f"to them: the last step is clipping x + eps·sign(∇) to [0, 1] with .clamp(0, 1)")
    eps2 = 0.03
    out2 = call_student(student, model, x, y, eps2, what=what)
    assert_tensor(out2, what, like=x)
    if not _matches(out2.detach(), (x + eps2 * s).clamp(0, 1)):
        raise fail(f"{what} is right for eps={eps:g} but not for eps={eps2:g}: use the eps argument, don't hard-code it")
    return (f"fgsm: clip(x + ε·sign(∇ₓ loss), 0, 1), equal to the reference at ε = {eps:g} and {eps2:g}; the mean loss "
            f"of the test model rises from {_toy_loss(x, y):.3f} to {_toy_loss(ref, y):.3f}; x untouched")


def _projection_cases(norm: str):
    """(delta, eps) batches: inside, zero, on the boundary, outside, far outside; grey and colour."""
    g = torch.Generator().manual_seed(31)
    cases = []
    if norm == "linf":
        eps = 0.1
        d = (torch.rand((6, 1, 28, 28), generator=g) * 2 - 1) * 3 * eps
        d[0] *= 0.3                          # entirely inside
        d[1] = 0.0                           # zero
        d[2] = d[2].clamp(-eps, eps)         # inside or exactly on the boundary
        d[3, 0, 5, 5] = -0.45                # far below -eps
        cases.append((d, eps))
        cases.append(((torch.rand((3, 3, 8, 8), generator=g) * 2 - 1) * 0.6, 0.25))
    else:
        eps = 1.5
        d = torch.randn((6, 1, 28, 28), generator=g)
        d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        d = d * torch.tensor([0.5, 0.0, 1.0, 2.0, 5.0, 0.9]).view(-1, 1, 1, 1) * eps   # ‖δ‖₂ / eps per example
        cases.append((d, eps))
        c = torch.randn((3, 3, 8, 8), generator=g)
        cases.append((c / c.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * torch.tensor([0.3, 1.7, 0.8]).view(-1, 1, 1, 1), 1.0))
    return cases


def _ref_project(delta, eps, norm):
    from advlab.attacks.base import project_l2, project_linf
    return project_linf(delta, eps) if norm == "linf" else project_l2(delta, eps)


def _check_projection(student, norm: str) -> str:
    name = f"project_{norm}"
    what = f"your {name}"
    for delta, eps in _projection_cases(norm):
        try:
            out = call_student(student, delta, eps, what=what)
        except AssertionError as e:
            raise _size_hint(e) from e.__cause__
        assert_tensor(out, what, like=delta)
        ref = _ref_project(delta, eps, norm)
        if _matches(out, ref):
            continue
        flat, n = delta.flatten(1), len(delta)
        norms = flat.norm(dim=1)
        bc = lambda t: t.view(-1, *([1] * (delta.dim() - 1)))  # noqa: E731
        if bool(torch.isnan(out).any()):
            i = int(torch.isnan(out.flatten(1)).any(1).nonzero()[0])
            raise fail(f"{what} returns NaN for example {i}" + (" (a zero perturbation)" if float(norms[i]) == 0 else "")
                       + ": guard the division by the norm, e.g. norms.clamp_min(1e-12)")
        other = _ref_project(delta, eps, "l2" if norm == "linf" else "linf")
        if _matches(out, other):
            raise fail(f"{what} computes the {'L2' if norm == 'linf' else 'L∞'} projection: "
                       + ("the L∞ projection clips each entry to [-eps, eps] independently"
                          if norm == "linf" else "the L2 projection rescales each whole example by "
                          "min(1, eps / ‖δ‖₂), it does not clip entries"))
        if norm == "linf":
            linf = flat.abs().amax(1)
            if _matches(out, delta.clamp(max=eps)):
                raise fail(f"{what} only clips from above: entries below -eps stay (e.g. {float(delta.min()):.2f} "
                           f"with eps = {eps:g}); clamp to [-eps, eps]")
            if _matches(out, delta.clamp(min=-eps)):
                raise fail(f"{what} only clips from below: entries above eps stay (e.g. {float(delta.max()):.2f} "
                           f"with eps = {eps:g}); clamp to [-eps, eps]")
            if _matches(out, delta.clamp(0, eps)):
                raise fail(f"{what} clamps to [0, eps]: negative entries must stay negative; the ball is [-eps, eps]")
            if _matches(out, eps * delta.sign()):
                raise fail(f"{what} moves every entry to ±eps (that is FGSM's step, not a projection): entries "
                           f"already inside [-eps, eps] must not change")
            for cand in (delta * bc(eps / linf.clamp_min(1e-12)),
                         delta * bc(torch.clamp(eps / linf.clamp_min(1e-12), max=1.0))):
                if _matches(out, cand):
                    raise fail(f"{what} rescales whole examples, which also shrinks entries that were already inside "
                               f"[-eps, eps]; the L∞ projection clips each entry independently: "
                               f"delta.clamp(-eps, eps)")
        else:
            scale = torch.clamp(eps / norms.clamp_min(1e-12), max=1.0)
            if _matches(out, delta * bc(eps / norms.clamp_min(1e-12))):
                i = int(((norms < eps) & (norms > 0)).nonzero()[0])
                raise fail(f"{what} also rescales vectors already inside the ball: example {i} has "
                           f"‖δ‖₂ = {float(norms[i]):.3g} < eps = {eps:g} and must stay unchanged, yours has "
                           f"‖δ‖₂ = {float(out[i].flatten().norm()):.3g}; scale by min(1, eps / ‖δ‖₂)")
            whole = float(flat.norm())
            if _matches(out, delta * min(1.0, eps / whole)) or _matches(out, delta * eps / whole):
                raise fail(f"{what} computes one norm for the whole batch ({whole:.3g}); each example has its own: "
                           f"norms = delta.flatten(1).norm(dim=1), shape (N,)")
            if _matches(out, delta * bc(torch.clamp(eps / norms.pow(2).clamp_min(1e-12), max=1.0))):
                raise fail(f"{what} divides by the squared norm: the factor is min(1, eps / ‖δ‖₂)")
            if _matches(out, delta * bc(torch.clamp(eps ** 2 / norms.pow(2).clamp_min(1e-12), max=1.0))):
                raise fail(f"{what} uses squared norms: ‖result‖₂ must be eps (not eps²/‖δ‖₂); the factor is "
                           f"min(1, eps / ‖δ‖₂)")
            got = out.flatten(1).norm(dim=1)
            want = torch.minimum(norms, torch.tensor(eps))
            inside = norms <= eps
            moved_inside = inside & ~torch.isclose(out.flatten(1), flat, atol=1e-6).all(1)
            if bool(moved_inside.any()):
                i = int(moved_inside.nonzero()[0])
                verb = "shrinks" if float(got[i]) < float(norms[i]) else "changes"
                raise fail(f"{what} also {verb} vectors already inside the ball: example {i} has ‖δ‖₂ = "
                           f"{float(norms[i]):.3g} ≤ eps = {eps:g} and must stay unchanged (yours: ‖·‖₂ = "
                           f"{float(got[i]):.3g})")
            bad = ~torch.isclose(got, want, atol=1e-4, rtol=1e-4)
            if bool(bad.any()):
                i = int(bad.nonzero()[0])
                raise fail(f"{what}: example {i} has ‖δ‖₂ = {float(norms[i]):.3g} > eps = {eps:g}; its projection "
                           f"must have norm eps, yours has {float(got[i]):.3g}")
            cos = (out.flatten(1) * flat).sum(1) / (got * norms).clamp_min(1e-12)
            if bool((cos[norms > 0] < 1 - 1e-4).any()):
                raise fail(f"{what} changes the direction of some perturbations: the projection only rescales "
                           f"(multiply each example by min(1, eps / ‖δ‖₂))")
        out_of_ball = (out.flatten(1).abs().amax(1) > eps + 1e-6) if norm == "linf" else \
            (out.flatten(1).norm(dim=1) > eps + 1e-5)
        if bool(out_of_ball.any()):
            i = int(out_of_ball.nonzero()[0])
            raise fail(f"{what} leaves example {i} outside the ball of radius eps = {eps:g}")
        if delta.shape[1] == 3:
            raise fail(f"{what} is right on grey 28x28 batches but wrong on colour (3, 8, 8) ones (eps = {eps:g}): "
                       f"don't hard-code the image size or eps")
        assert_close(out, ref, what)
    if norm == "linf":
        return ("project_linf: every entry clipped to [-ε, ε], entries inside untouched; right on grey and colour "
                "batches and two radii; input untouched")
    return ("project_l2: examples outside the ball rescaled to ‖δ‖₂ = ε, those inside (and the zero vector) left "
            "alone, one norm per example; right on grey and colour batches; input untouched")


@register
def check_project_linf(student) -> str:
    """Exercise 01.2a: project_linf(delta, eps) -> the closest point of the L∞ ball: each entry clipped to [-eps, eps]."""
    return _check_projection(student, "linf")


@register
def check_project_l2(student) -> str:
    """Exercise 01.2b: project_l2(delta, eps) -> delta * min(1, eps / ‖delta‖₂), one norm per example."""
    return _check_projection(student, "l2")


def _pgd_step_case(norm: str):
    """(x_adv, x, grad, alpha, eps, y): a PGD iterate partly on the boundary of the ball, and the
    toy model's input gradient there."""
    x, y = _toy_batch(8, seed=12)
    g = torch.Generator().manual_seed(13)
    if norm == "l2":   # mid-grey images: clipping to [0, 1] barely acts, so the L2 projection must
        x = 0.2 + 0.6 * torch.rand(x.shape, generator=g)
        with torch.no_grad():
            y = _toy_classifier()(x).argmax(1)
    if norm == "linf":
        eps, alpha = 0.1, 0.03
        d = (torch.rand(x.shape, generator=g) * 2 - 1) * eps
        d[:4] = eps * torch.randn(d[:4].shape, generator=g).sign()       # on the corners: projection matters
    else:
        eps, alpha = 1.5, 0.5
        d = torch.randn(x.shape, generator=g)
        d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * eps * torch.tensor(
            [0.98, 0.95, 1.0, 0.9, 0.2, 0.3, 0.5, 0.1]).view(-1, 1, 1, 1)
    x_adv = (x + d).clamp(0, 1)
    return x_adv, x, _toy_grad(x_adv, y), alpha, eps, y


def _steps(x_adv, x, grad, alpha, eps, norm):
    """The reference PGD step and the usual wrong ones, by name."""
    from advlab.attacks.base import normalize_l2
    unit = grad.sign() if norm == "linf" else normalize_l2(grad)
    P = lambda d: _ref_project(d, eps, norm)  # noqa: E731
    c = {
        "ref": (x + P(x_adv + alpha * unit - x)).clamp(0, 1),
        "ref_clip_first": x + P((x_adv + alpha * unit).clamp(0, 1) - x),
        "descend": (x + P(x_adv - alpha * unit - x)).clamp(0, 1),
        "from_x": (x + P(alpha * unit)).clamp(0, 1),
        "no_projection": (x_adv + alpha * unit).clamp(0, 1),
        "no_clip": x + P(x_adv + alpha * unit - x),
        "eps_step": (x + P(x_adv + eps * unit - x)).clamp(0, 1),
        "other_norm_step": (x + P(x_adv + alpha * (normalize_l2(grad) if norm == "linf" else grad.sign()) - x)).clamp(0, 1),
        "other_norm_projection": (x + _ref_project(x_adv + alpha * unit - x, eps,
                                                   "l2" if norm == "linf" else "linf")).clamp(0, 1),
    }
    if norm == "l2":
        c["raw_grad"] = (x + P(x_adv + alpha * grad - x)).clamp(0, 1)
        c["batch_norm"] = (x + P(x_adv + alpha * grad / grad.norm() - x)).clamp(0, 1)
    return c


@register
def check_pgd_step(student) -> str:
    """Exercise 01.3: pgd_step(x_adv, x, grad, alpha, eps, norm) -> one PGD step: x_adv + alpha * sign(grad)
    (linf) or x_adv + alpha * grad / ‖grad‖₂ (l2, per example); project x_new - x onto the eps ball;
    clip to [0, 1]."""
    what = "your pgd_step"
    msgs = []
    for norm in ("linf", "l2"):
        x_adv, x, grad, alpha, eps, y = _pgd_step_case(norm)
        try:
            out = call_student(student, x_adv, x, grad, alpha, eps, norm, what=what)
        except AssertionError as e:
            raise _size_hint(e) from e.__cause__
        assert_tensor(out, what, like=x)
        _no_grad_leak(out, what)
        c = _steps(x_adv, x, grad, alpha, eps, norm)
        l0, l1 = _toy_loss(x_adv, y), _toy_loss(out.clamp(0, 1), y)
        if _matches(out, c["ref"]) or (norm == "l2" and _matches(out, c["ref_clip_first"])):
            msgs.append(f"{norm}: loss {l0:.3f} → {l1:.3f}")
            continue
        unit = "alpha·sign(grad)" if norm == "linf" else "alpha·grad/‖grad‖₂"
        where = f"norm={norm!r}: "
        if _matches(out, c["descend"]):
            raise fail(f"{where}your PGD step descends the loss (loss went from {l0:.3f} to {l1:.3f}): an untargeted "
                       f"attack adds +{unit}")
        if _matches(out, c["from_x"]):
            raise fail(f"{where}you stepped from x, not from the current iterate x_adv: x_new = x_adv + {unit}, "
                       f"then project x_new - x")
        if _matches(out, c["no_projection"]):
            d = (out - x).flatten(1)
            size = d.abs().amax(1).max() if norm == "linf" else d.norm(dim=1).max()
            raise fail(f"{where}your step leaves the eps-ball (largest ‖x_new - x‖ = {float(size):.3g} > eps = {eps:g}): "
                       f"project the total perturbation x_new - x onto the {norm} ball, not only the step {unit} "
                       f"(which is smaller than eps anyway)")
        if _matches(out, c["no_clip"]):
            assert_in_box(out, f"{where}your pgd_step")
        if _matches(out, c["eps_step"]):
            raise fail(f"{where}your step has size eps = {eps:g}; PGD takes small steps of size alpha = {alpha:g} and "
                       f"relies on the projection to stay in the ball")
        if _matches(out, c["other_norm_step"]):
            raise fail(f"{where}wrong step direction: for 'linf' the step is alpha·sign(grad), for 'l2' it is "
                       f"alpha·grad/‖grad‖₂ per example; you used the other one")
        if _matches(out, c["other_norm_projection"]):
            raise fail(f"{where}wrong projection: project with the {norm} ball "
                       + ("(clip each entry to [-eps, eps])" if norm == "linf" else "(rescale to ‖·‖₂ ≤ eps)"))
        if norm == "l2" and _matches(out, c["raw_grad"]):
            raise fail(f"{where}you stepped along alpha·grad; for L2 normalise the gradient of each example to length 1 "
                       f"first: grad / ‖grad‖₂ (per example, shape (N, 1, 1, 1))")
        if norm == "l2" and _matches(out, c["batch_norm"]):
            raise fail(f"{where}you normalised the gradient by the norm of the whole batch; normalise each example by "
                       f"its own norm (grad.flatten(1).norm(dim=1))")
        assert_in_ball(x, out, eps, norm, f"{where}your pgd_step", tol=1e-5)
        assert_in_box(out, f"{where}your pgd_step")
        if l1 < l0:
            raise fail(f"{where}your PGD step descends the loss (loss went from {l0:.3f} to {l1:.3f})")
        assert_close(out, c["ref"], f"{where}your pgd_step")
    return ("pgd_step: ascend, project the total perturbation onto the ε-ball, clip to [0,1]; right for L∞ and L2 "
            f"({'; '.join(msgs)}); inputs untouched")


def _targeted_cases():
    g = torch.Generator().manual_seed(41)
    z = torch.randn((8, 10), generator=g) * 3
    t = torch.randint(0, 10, (8,), generator=g)
    t[0] = z[0].argmax()                    # one example already predicted as its target
    t[1] = z[1].argmin()                    # one whose target is the least likely class
    z5 = torch.randn((5, 5), generator=g) * 2
    t5 = torch.tensor([4, 0, 2, 1, 3])
    return [(z, t), (z5, t5)]


@register
def check_targeted_loss(student) -> str:
    """Exercise 01.5: targeted_loss(logits, target) -> (N,) per-example loss whose *descent* makes the
    target class more likely: the cross-entropy to the target (or the targeted margin
    max_{j≠t} z_j - z_t)."""
    import torch.nn.functional as F
    what = "your targeted_loss"
    kind = None
    for z, t in _targeted_cases():
        n = len(z)
        zr = z.clone().requires_grad_(True)
        with torch.enable_grad():
            out = call_student(student, zr, t, what=what)
        if isinstance(out, (int, float)):
            raise fail(f"{what} returned a Python number; return a tensor of {n} losses (no .item())")
        ce = F.cross_entropy(z, t, reduction="none")
        margin = z.scatter(1, t[:, None], float("-inf")).amax(1) - z.gather(1, t[:, None]).squeeze(1)
        if isinstance(out, torch.Tensor) and out.dim() == 0:
            v = out.detach()
            if torch.isclose(v, ce.mean()) or torch.isclose(v, ce.sum()):
                raise fail(f"{what} returns a single number (the batch {'mean' if torch.isclose(v, ce.mean()) else 'sum'} "
                           f"of the cross-entropy); return one loss per example, shape ({n},): "
                           f"F.cross_entropy(logits, target, reduction='none')")
        assert_tensor(out, what, shape=(n,))
        if not out.requires_grad:
            raise fail(f"{what} is not differentiable with respect to the logits (no autograd graph): avoid .argmax(), "
                       f".item(), torch.no_grad() and numpy inside it")
        val = out.detach()
        if _matches(val, ce):
            kind = kind or "ce"
            continue
        if _matches(val, margin):
            kind = kind or "margin"
            continue
        if _matches(val, -ce):
            raise fail(f"descending {what} makes the target *less* likely: -CE(logits, target) goes down as the "
                       f"target's probability goes down. Return the cross-entropy to the target itself; the attack "
                       f"descends it (that is where the minus sign goes)")
        if _matches(val, -margin):
            raise fail(f"descending {what} pushes the target's logit down: return max_{{j≠t}} z_j - z_t (or the "
                       f"cross-entropy to the target), not its negative")
        if _matches(val, F.cross_entropy(z.softmax(1), t, reduction="none")):
            raise fail(f"{what} applies softmax before cross_entropy; F.cross_entropy expects logits (it applies "
                       f"log-softmax itself)")
        if _matches(val, -z.gather(1, t[:, None]).squeeze(1)):
            raise fail(f"{what} is -z_t (nll_loss on raw logits?): that misses the log-softmax, so other classes "
                       f"never enter; use F.cross_entropy(logits, target, reduction='none')")
        p_t = z.softmax(1).gather(1, t[:, None]).squeeze(1)
        if _matches(val, -p_t) or _matches(val, 1 - p_t):
            raise fail(f"{what} uses the target's probability: its descent points the right way, but its gradient "
                       f"vanishes when p_target is tiny (exactly where an attack starts); use the cross-entropy "
                       f"-log p_target")
        if _matches(val, F.cross_entropy(z, z.argmax(1), reduction="none")):
            raise fail(f"{what} ignores the target: it measures the loss of the predicted class")
        with torch.enable_grad():
            gz, = torch.autograd.grad(out.sum(), zr, allow_unused=True)
        if gz is not None:
            dz_t = gz.gather(1, t[:, None]).squeeze(1)
            if bool((dz_t > 1e-7).any()):
                i = int((dz_t > 1e-7).nonzero()[0])
                raise fail(f"descending {what} lowers the target's logit for example {i}: the loss must decrease as "
                           f"the target's logit z_t grows")
        assert_close(val, ce, what)
    extra = "" if kind == "ce" else " (the targeted margin; the reference is the cross-entropy to the target)"
    return (f"targeted_loss: one loss per example, differentiable, and its descent raises the target's probability"
            f"{extra}")


def _reference_pgd(model, x, y, eps, alpha, steps, norm):
    from advlab.attacks import BIM
    return BIM(eps=eps, alpha=alpha, steps=steps, norm=norm, checks=False)(model, x, y)


@register
def check_pgd(student) -> str:
    """Exercise 01.4: pgd(model, x, y, eps, alpha, steps, norm="linf", random_start=True) built from
    pgd_step; without the random start it must agree with advlab.attacks.BIM."""
    what = "your pgd"
    model = _toy_classifier()
    x, y = _toy_batch(16, seed=14)
    msgs = []
    for norm, eps, alpha, steps in (("linf", 0.1, 0.02, 8), ("l2", 1.5, 0.4, 8)):
        where = f"norm={norm!r}, random_start=False: "
        out = call_student(student, model, x, y, eps, alpha, steps, norm, False, what=what)
        _untouched_requires_grad(x, what)
        assert_tensor(out, what, like=x)
        _no_grad_leak(out, what)
        out = out.detach()
        if bool((out == x).all()):
            raise fail(f"{where}{what} returned x unchanged: run `steps` PGD steps starting from x_adv = x")
        assert_in_ball(x, out, eps, norm, f"{where}{what}", tol=1e-5)
        assert_in_box(out, f"{where}{what}")
        ref = _reference_pgd(model, x, y, eps, alpha, steps, norm)
        agree = float(torch.isclose(out, ref, atol=1e-5).float().mean())
        l_ref, l_out = _toy_loss(ref, y), _toy_loss(out, y)
        if agree < 0.99:
            one = _reference_pgd(model, x, y, eps, alpha, 1, norm)
            if _matches(out, one):
                raise fail(f"{where}{what} stops after one step: loop `steps` times and feed each x_adv into the next "
                           f"step (recompute the gradient at the current x_adv)")
            if l_out < _toy_loss(x, y):
                raise fail(f"{where}{what} descends the loss (loss went from {_toy_loss(x, y):.3f} to {l_out:.3f}): "
                           f"pass the gradient of the loss itself to pgd_step, which ascends it")
            fixed = x.clone()
            g0 = _toy_grad(x, y)
            for _ in range(steps):
                fixed = _steps(fixed, x, g0, alpha, eps, norm)["ref"]
            if _matches(out, fixed):
                raise fail(f"{where}{what} reuses the gradient at x for every step: recompute it at the current "
                           f"iterate x_adv inside the loop")
            raise fail(f"{where}{what} agrees with advlab.attacks.BIM (PGD without random start, same eps, alpha, "
                       f"steps) at only {100 * agree:.1f}% of the pixels; mean loss {l_out:.3f} (yours) vs {l_ref:.3f} "
                       f"(BIM). Each step: gradient of F.cross_entropy(model(x_adv), y) at the current x_adv, then "
                       f"x_adv = pgd_step(x_adv, x, grad, alpha, eps, norm)")
        where = f"norm={norm!r}, random_start=True: "
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            r1 = call_student(student, model, x, y, eps, alpha, steps, norm, True, what=what)
            r2 = call_student(student, model, x, y, eps, alpha, steps, norm, True, what=what)
        assert_tensor(r1, what, like=x)
        r1, r2 = r1.detach(), r2.detach()
        assert_in_ball(x, r1, eps, norm, f"{where}{what}", tol=1e-5)
        assert_in_box(r1, f"{where}{what}")
        if torch.equal(r1, out):
            raise fail(f"{where}{what} ignores random_start: start from a random point of the ball, e.g. "
                       f"x_adv = (x + project(uniform noise, eps)).clamp(0, 1)")
        if torch.equal(r1, r2):
            raise fail(f"{where}{what} gives the same result on two calls: draw a fresh random start each time "
                       f"(don't re-seed inside the function)")
        msgs.append(f"{norm}: loss {_toy_loss(x, y):.3f} → {l_out:.3f}")
    return (f"pgd: without random start it equals advlab.attacks.BIM step for step ({'; '.join(msgs)}); with it, "
            f"a fresh random start each call, always inside the ε-ball and [0,1]")
