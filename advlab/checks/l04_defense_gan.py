"""Checks for exercise set 04: Defense-GAN (the latent search with restarts, the BPDA wrapper).

Defense-GAN (Samangouei, Kabkab & Chellappa, "Defense-GAN: Protecting Classifiers Against
Adversarial Attacks Using Generative Models") purifies x by searching the latent z whose G(z) is
closest to x, from several random starts. The check uses a tiny fixed generator and a few steps,
so that the restarts end at clearly different errors and the winning restart differs between
images; the answer is compared with advlab.generative.latent_search.latent_search, and on a mismatch
with re-runs of the search that each change one thing (the prior's scale, the order of the
latents, the loss reduction, momentum, the number of steps). BPDA (Athalye, Carlini & Wagner,
"Obfuscated Gradients Give a False Sense of Security") is checked with a non-differentiable
quantiser and a differentiable blur, so that a gradient leaking from the purifier itself shows,
and with a nonlinear surrogate, whose Jacobian must be taken at x.
"""
from __future__ import annotations

import math

import torch

from .framework import (
    _matches, _untouched_requires_grad, _vjp, assert_close, assert_tensor, call_student, fail, fixed_images,
    register,
)


def _toy_generator() -> torch.nn.Module:
    """A tiny fixed generator G(z) = sigmoid(W z + b), latent_dim 8, images (N, 1, 28, 28), in eval
    mode with trainable parameters (so that a search which calls .backward() leaves a trace in their
    .grad). A fresh one per call: a check must not see another check's gradients."""
    nn = torch.nn

    class ToyGenerator(nn.Module):
        def __init__(self):
            super().__init__()
            self.latent_dim = 8
            g = torch.Generator().manual_seed(41)
            self.W = nn.Parameter(torch.randn(784, 8, generator=g) * 2.0)
            self.b = nn.Parameter(torch.randn(784, generator=g) * 0.5)

        def forward(self, z):
            return torch.sigmoid(z @ self.W.t() + self.b).view(-1, 1, 28, 28)

    return ToyGenerator().eval()


def _latent_search_case():
    """(G, x, steps, restarts, lr, momentum): two images on G's range and four off it; few steps,
    so that the restarts end at clearly different errors and the best one differs between images."""
    G = _toy_generator()
    with torch.no_grad():
        on_range = G(torch.randn(2, 8, generator=torch.Generator().manual_seed(42)) / 8 ** 0.5)
    x = torch.cat([on_range, fixed_images(4, seed=43)])
    return G, x, 6, 5, 10.0, 0.7


def _ref_search(G, x, z0, steps, lr, momentum, loss_mean=False, pixel_sum=False):
    """The search of exercise 04.1 from the given initial latents z0 (R, N, d). Returns the final
    reconstructions (R, N, C, H, W) and errors (R, N) of every restart. Variants for the diagnoses:
    loss_mean (the batch's mean error as the loss), pixel_sum (squared error summed over pixels)."""
    R, n, d = z0.shape
    z = z0.reshape(R * n, d).clone()
    target = x.repeat(R, 1, 1, 1)
    v = torch.zeros_like(z)
    err_of = (lambda e: e.flatten(1).sum(1)) if pixel_sum else (lambda e: e.flatten(1).mean(1))
    with torch.enable_grad():
        for _ in range(steps):
            z.requires_grad_(True)
            err = err_of((G(z) - target).pow(2))
            grad, = torch.autograd.grad(err.mean() if loss_mean else err.sum(), z)
            with torch.no_grad():
                v = momentum * v + grad
                z = z.detach() - lr * v
    with torch.no_grad():
        rec = G(z)
        err = (rec - target).pow(2).flatten(1).mean(1)
    return rec.view(R, n, *x.shape[1:]), err.view(R, n)


def _pick(recs, errs, best):
    idx = torch.arange(recs.shape[1])
    return recs[best, idx], errs[best, idx]


@register
def check_latent_search_restarts(student) -> str:
    """Exercise 04.1: latent_search_restarts(G, x, steps, restarts, lr=10.0, momentum=0.7, generator=None)
    -> (x_rec, err): Defense-GAN's projection with R restarts. z0 = randn(restarts, N, d, generator) /
    sqrt(d); per image the error is the mean over pixels of (G(z) - x)^2; `steps` steps of SGD with
    momentum on the sum of the errors (v <- momentum * v + grad, z <- z - lr * v); per image the restart
    with the lowest final error wins; x_rec = G(z*) (N, C, H, W), err its error (N,)."""
    from advlab.generative.latent_search import latent_search
    what = "your latent_search_restarts"
    G, x, steps, R, lr, mom = _latent_search_case()
    n, d = len(x), G.latent_dim
    seed = 44
    out = call_student(student, G, x, steps, R, lr, mom, torch.Generator().manual_seed(seed), what=what)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise fail(f"{what} returned a {type(out).__name__}; return the pair (x_rec, err): the reconstructions "
                   f"G(z*) of shape (N, C, H, W) and their errors of shape (N,)")
    x_rec, err = out
    assert_tensor(x_rec, f"{what}'s x_rec", like=x)
    assert_tensor(err, f"{what}'s err", shape=(n,))
    for p in G.parameters():
        if p.grad is not None:
            raise fail(f"{what} left gradients in G's parameters (.grad is set): loss.backward() differentiates "
                       f"w.r.t. every parameter too; take the gradient in z alone with "
                       f"grad, = torch.autograd.grad(err.sum(), z)")
    for t, name in ((x_rec, "x_rec"), (err, "err")):
        if t.requires_grad:
            raise fail(f"{what} returns {name} still attached to the autograd graph: compute the final "
                       f"G(z) and errors under torch.no_grad() (or .detach() them)")
    x_rec, err = x_rec.detach(), err.detach()
    ref = latent_search(G, x, steps, R, lr, mom, decay_at=1.0, generator=torch.Generator().manual_seed(seed))
    if _matches(x_rec, ref.x_rec) and _matches(err, ref.err):
        again = call_student(student, G, x, steps, R, lr, mom, torch.Generator().manual_seed(seed), what=what)
        if not _matches(again[0].detach(), ref.x_rec):
            raise fail(f"{what} gives different results for the same seeded generator: draw every random "
                       f"number with generator=generator")
        per_restart = ref.all_err
        return (f"latent_search_restarts: equal to Defense-GAN's search on {n} images ({R} restarts, {steps} "
                f"steps); the winning restart differs between images ({sorted(set(ref.best.tolist()))}) and "
                f"beats the mean restart by {(per_restart.mean(1) - ref.err).mean().item():.4f} in error")
    # --- diagnoses: which plausible variant did the student compute?
    own = (x_rec - x).pow(2).flatten(1).mean(1)
    if _matches(err, own * x[0].numel()):
        raise fail(f"{what} returns the squared error summed over pixels; the error of Defense-GAN (and of this "
                   f"exercise) is the mean over pixels: (G(z) - x).pow(2).flatten(1).mean(1)")
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(R, n, d, generator=g) / math.sqrt(d)
    recs, errs = _ref_search(G, x, z0, steps, lr, mom)
    idx = torch.arange(n)
    if _matches(x_rec, recs[0]) and not _matches(recs[0], ref.x_rec):
        raise fail(f"{what} keeps restart 0 for every image: run all restarts and keep, per image, the one "
                   f"with the lowest final error (err.view(restarts, N).argmin(0))")
    if _matches(x_rec, recs[-1]):
        raise fail(f"{what} keeps the last restart for every image: keep, per image, the restart with the "
                   f"lowest final error")
    if _matches(x_rec, recs[errs.sum(1).argmin()].view_as(x)) or _matches(x_rec, recs[errs.mean(1).argmin()]):
        raise fail(f"{what} picks one restart for the whole batch (lowest total error); the choice is per "
                   f"image: err.view(restarts, N).argmin(0) gives one restart index per image")
    if _matches(x_rec, _pick(recs, errs, errs.argmax(0))[0]):
        raise fail(f"{what} keeps the restart with the HIGHEST error (argmax); keep the lowest (argmin)")
    if _matches(err, errs.mean(0)):
        raise fail(f"{what} returns the error averaged over the restarts; return the error of the chosen one")
    variants = [
        (dict(z0=z0 * math.sqrt(d)), "draws the initial latents from N(0, I); Defense-GAN's prior is "
                                     "N(0, I/d): divide torch.randn(...) by sqrt(latent_dim)"),
        (dict(z0=(torch.randn(n, R, d, generator=torch.Generator().manual_seed(seed)) / math.sqrt(d)).transpose(0, 1)),
         "draws the latents image-major (shape (N, restarts, d)); draw them restart-major, "
         "torch.randn(restarts, N, d, generator=generator), so that row r * N + i is restart r of image i "
         "(the order x.repeat(restarts, 1, 1, 1) gives the targets)"),
        (dict(loss_mean=True), "differentiates the MEAN of the errors over the restarts and images, which "
                               "divides every gradient by restarts * N (a learning rate that shrinks with the "
                               "batch): take the gradient of err.sum(), each latent's own error"),
        (dict(pixel_sum=True), "minimises the squared error summed over pixels: with lr = 10 that is a "
                               "784x larger step; the error is the mean over pixels"),
        (dict(momentum=0.0), "ignores momentum: v <- momentum * v + grad, then z <- z - lr * v"),
        (dict(lr=lr * (1 - mom)), "uses an exponential average v <- momentum * v + (1 - momentum) * grad; "
                                  "Defense-GAN (and torch.optim.SGD) use v <- momentum * v + grad"),
        (dict(lr=-lr), "climbs the error: step against the gradient, z <- z - lr * v"),
        (dict(steps=steps - 1), "takes one step too few: loop `steps` times"),
        (dict(steps=steps + 1), "takes one step too many: loop `steps` times"),
    ]
    for change, msg in variants:
        kw = dict(z0=z0, steps=steps, lr=lr, momentum=mom) | change
        r_v, e_v = _ref_search(G, x, kw.pop("z0"), **kw)
        x_v, err_v = _pick(r_v, e_v, e_v.argmin(0))
        if _matches(x_rec, x_v):
            raise fail(f"{what} {msg}")
    a = call_student(student, G, x, steps, R, lr, mom, torch.Generator().manual_seed(seed), what=what)
    if not _matches(a[0].detach(), x_rec):
        raise fail(f"{what} gives different results for the same seeded generator: draw the initial latents "
                   f"with generator=generator, not from torch's global random stream")
    if not _matches(err, own):
        raise fail(f"{what}: err is not the error of the x_rec you return (mean over pixels of "
                   f"(x_rec - x)^2 per image)")
    if err.mean() > errs.mean() + 1e-6:
        raise fail(f"{what} ends with a higher error than the average restart of the reference "
                   f"({err.mean().item():.4f} vs {errs.mean().item():.4f}): check the sign of the step and "
                   f"that you keep the best restart")
    assert_close(x_rec, ref.x_rec, f"{what}'s x_rec", atol=1e-4)
    raise fail(f"{what} differs from Defense-GAN's search")  # pragma: no cover - assert_close raised


def _bpda_case():
    """x, two purifiers and a surrogate. The 4-level quantiser is non-differentiable (autograd sees a
    zero gradient); the blur is differentiable, so a gradient of the purifier leaking into the answer
    shows. The surrogate is smooth and nonlinear: its Jacobian depends on the point it is taken at."""
    import torch.nn.functional as F
    x = fixed_images(6, seed=45)
    calls = {"grad_enabled": []}

    def quantise(t):
        calls["grad_enabled"].append(torch.is_grad_enabled())
        return torch.round(t * 3) / 3

    def blur(t):
        calls["grad_enabled"].append(torch.is_grad_enabled())
        return F.avg_pool2d(t, 3, stride=1, padding=1, count_include_pad=False)

    def surrogate(t):
        return torch.sigmoid(6 * (F.avg_pool2d(t, 3, stride=1, padding=1, count_include_pad=False) - 0.5))

    return x, [(quantise, None), (quantise, surrogate), (blur, None)], calls


@register
def check_bpda(student) -> str:
    """Exercise 04.2: bpda(purify, x, backward_fn=None) -> a tensor equal to purify(x) whose gradient
    w.r.t. x is the identity (backward_fn None) or the gradient of backward_fn at x (straight-through),
    whatever purify's own gradient is."""
    what = "your bpda"
    x, cases, calls = _bpda_case()
    u = fixed_images(6, seed=46) - 0.5           # an upstream gradient
    calls["grad_enabled"].clear()
    for purify, backward_fn in cases:
        where = (f"with purify = a {'quantiser' if purify.__name__ == 'quantise' else 'blur'} and "
                 f"{'backward_fn=None' if backward_fn is None else 'a backward_fn'}: ")
        with torch.no_grad():
            value = purify(x)
        xr = x.clone().requires_grad_(True)
        args = (purify, xr) if backward_fn is None else (purify, xr, backward_fn)
        out = call_student(student, *args, what=what)
        assert_tensor(out, what, like=x)
        v = out.detach()
        if not _matches(v, value):
            if _matches(v, x):
                raise fail(f"{where}{what} returns x itself: the forward value must be the defense's real output "
                           f"purify(x), otherwise the attack is evaluated on a model without the defense")
            if backward_fn is not None and _matches(v, backward_fn(x)):
                raise fail(f"{where}{what} returns backward_fn(x): it only approximates the gradient; the value "
                           f"must be purify(x)")
            if _matches(v, x + value):
                raise fail(f"{where}{what} returns x + purify(x): subtract the surrogate inside the detach, "
                           f"s + (purify(x) - s).detach()")
            assert_close(v, value, f"{where}{what}'s value (it must equal purify(x))", atol=1e-5)
        if not out.requires_grad:
            raise fail(f"{where}{what} returns a tensor that does not require grad: no gradient reaches x. "
                       f"Keep a differentiable path from x (x itself, or backward_fn(x)) and detach only the "
                       f"difference: s + (purify(x) - s).detach()")
        try:
            g, = torch.autograd.grad((out * u).sum(), xr)
        except RuntimeError as e:
            raise fail(f"{where}{what}'s output is not connected to x in the autograd graph ({e}); the output "
                       f"must be computed from x: s + (purify(x) - s).detach() with s = x") from None
        expected = u if backward_fn is None else _vjp(backward_fn, x, u)
        if _matches(g, expected):
            continue
        own = _vjp(purify, x, u)                 # what autograd sees of the purifier itself
        surrogate = "x (identity)" if backward_fn is None else "backward_fn(x)"
        if _matches(g, own):
            raise fail(f"{where}{what} lets autograd differentiate purify itself"
                       + (", and the gradient of a non-differentiable purifier is zero (the masked gradient "
                          "BPDA replaces)" if bool((own == 0).all()) else "")
                       + f": detach purify(x) and let the gradient flow through {surrogate} only")
        if _matches(g, expected + own):
            raise fail(f"{where}{what} adds purify's own gradient to the surrogate's (something like "
                       f"s + purify(x) - s.detach()): detach the whole difference, s + (purify(x) - s).detach()")
        if backward_fn is not None and _matches(g, u):
            raise fail(f"{where}{what} ignores backward_fn: the gradient must be backward_fn's, at x")
        if backward_fn is not None and _matches(g, _vjp(backward_fn, value, u)):
            raise fail(f"{where}{what} evaluates backward_fn at purify(x); BPDA differentiates the "
                       f"surrogate at the input x: s = backward_fn(x)")
        assert_close(g, expected, f"{where}the gradient through {what}", atol=1e-5)
    built_graph = any(calls["grad_enabled"])
    xr = x.clone()
    plain = call_student(student, cases[0][0], xr, what=what)
    _untouched_requires_grad(xr, what)
    with torch.no_grad():
        if not _matches(plain.detach(), cases[0][0](x)):
            raise fail(f"{what} on an x that does not require grad must still return purify(x)")
    note = (" Tip: run purify under torch.no_grad(); only its value is used, and for a latent search autograd "
            "would otherwise record all of its L × R steps." if built_graph else "")
    return ("bpda: the value is purify(x) exactly; the gradient is the identity, or backward_fn's gradient at x, "
            "never the purifier's own gradient (zero for a quantiser, a blur's for a blur)." + note)
