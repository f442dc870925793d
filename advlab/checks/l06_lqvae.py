"""Checks for exercise set 06: LQ-VAE (the encoder's gradient-norm penalty, the quantiser and its
straight-through and soft relaxations).

The LQ-VAE (Kyatham, Mishra & Prathosh, "Variational Inference with Latent Space Quantization for
Adversarial Resilience") constrains its encoder with a penalty on the norm of a random projection
of its Jacobian. The penalty is compared with advlab.purifiers.lqvae.model.lipschitz_penalty in value
and in its gradient for the encoder's weights (a double backward, which only works with
create_graph=True), on a tiny smooth encoder whose Jacobian depends on the input; on a mismatch
the usual variants (squared norm, no square, an unnormalised or all-ones direction, logvar instead
of mu, one norm for the batch) are recomputed with the same random directions. The quantiser is
compared with the library's two-level Quantiser: the hard value, the straight-through gradient
(that of the identity) and the soft relaxation at two temperatures and in its zero-temperature limit.
"""
from __future__ import annotations

import torch

from .framework import (
    _matches, _untouched_requires_grad, assert_close, assert_tensor, call_student, fail, fixed_images, register,
)


def _toy_encoder() -> torch.nn.Module:
    """A tiny fixed encoder images (N, 1, 28, 28) -> (mu, logvar), each (N, 6), no batch norm (each
    image's gradient depends on that image only), smooth (tanh) so that its Jacobian depends on the
    input. A fresh one per call, so that a check sees no other check's gradients."""
    nn = torch.nn

    class ToyEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(61)
            self.W1 = nn.Parameter(torch.randn(24, 784, generator=g) / 28.0)
            self.W2 = nn.Parameter(torch.randn(12, 24, generator=g) * 0.6)

        def forward(self, x):
            h = torch.tanh(2 * x.flatten(1) @ self.W1.t() - 0.3)
            mu, logvar = (h @ self.W2.t()).chunk(2, dim=1)
            return mu, logvar

    return ToyEncoder().eval()


def _penalty_variants(encoder, x, K, seed):
    """Per-image penalty variants for the diagnoses, each computed with v drawn like the reference:
    name -> (N,) values (or a scalar for the whole-batch norm)."""
    xr = x.detach().clone().requires_grad_(True)
    mu, logvar = encoder(xr)
    n, d = mu.shape
    raw = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    v = raw / raw.norm(dim=1, keepdim=True)
    out = {}
    g_v, = torch.autograd.grad(mu, xr, grad_outputs=v, retain_graph=True)
    g_raw, = torch.autograd.grad(mu, xr, grad_outputs=raw, retain_graph=True)
    g_one, = torch.autograd.grad(mu.sum(), xr, retain_graph=True)
    g_lv, = torch.autograd.grad(logvar, xr, grad_outputs=v, retain_graph=True)
    norm = g_v.flatten(1).norm(dim=1)
    out["squared norm"] = (g_v.flatten(1).pow(2).sum(1) - K) ** 2
    out["no square"] = norm - K
    out["absolute value"] = (norm - K).abs()
    out["K = 1"] = (norm - 1.0) ** 2
    out["K = 0"] = norm ** 2
    out["unnormalised v"] = (g_raw.flatten(1).norm(dim=1) - K) ** 2
    out["sum of mu"] = (g_one.flatten(1).norm(dim=1) - K) ** 2
    out["logvar"] = (g_lv.flatten(1).norm(dim=1) - K) ** 2
    out["batch norm"] = ((g_v.norm() - K) ** 2).expand(n)
    out["linf norm"] = (g_v.flatten(1).abs().max(1).values - K) ** 2
    out["l1 norm"] = (g_v.flatten(1).abs().sum(1) - K) ** 2
    return {k: t.detach() for k, t in out.items()}


@register
def check_gradient_norm_penalty(student) -> str:
    """Exercise 06.1: gradient_norm_penalty(encoder, x, K=1.0, generator=None) -> (N,) the penalty
    (||grad_x (v_i . mu(x_i))||_2 - K)^2 per image, v_i = randn(N, d, generator) / its row norm,
    differentiable for the encoder's parameters (create_graph=True); equal to
    advlab.purifiers.lqvae.model.lipschitz_penalty(encoder, x, K, "projection", generator)."""
    from advlab.purifiers.lqvae.model import lipschitz_penalty
    what = "your gradient_norm_penalty"
    x = fixed_images(5, seed=62)
    n = len(x)
    seed = 63
    for K in (0.6, 1.0):
        enc = _toy_encoder()
        xs = x.clone()
        out = call_student(student, enc, xs, K, torch.Generator().manual_seed(seed), what=what)
        _untouched_requires_grad(xs, what)
        assert_tensor(out, what, shape=(n,))
        for p in enc.parameters():
            if p.grad is not None:
                raise fail(f"{what} left gradients in the encoder's parameters (.grad is set): take the input "
                           f"gradient with torch.autograd.grad(mu, x, grad_outputs=v, create_graph=True), not "
                           f"with .backward()")
        ref_enc = _toy_encoder()
        ref = lipschitz_penalty(ref_enc, x, K, "projection", torch.Generator().manual_seed(seed))
        got = out.detach()
        if not _matches(got, ref.detach()):
            variants = _penalty_variants(_toy_encoder(), x, K, seed)
            msgs = {
                "squared norm": "uses the SQUARED norm ||g||^2 (e.g. g.pow(2).sum()); the penalty uses the L2 norm "
                                "itself, g.flatten(1).norm(dim=1), then (norm - K) ** 2",
                "no square": "returns norm - K without the square: the penalty is (norm - K) ** 2, which pushes "
                             "the gain towards K from both sides",
                "absolute value": "returns |norm - K|; the penalty is the square (norm - K) ** 2",
                "K = 1": f"ignores K (it computes (norm - 1) ** 2 but K = {K}): subtract the K you were given",
                "K = 0": "penalises the norm itself, norm ** 2 (K = 0): the penalty pulls the norm towards K, "
                         "(norm - K) ** 2",
                "unnormalised v": "does not normalise v: divide each row by its norm, "
                                  "v = v / v.norm(dim=1, keepdim=True), so that v is a unit direction",
                "sum of mu": "differentiates mu.sum() (the all-ones direction, of length sqrt(d)); use a random "
                             "unit direction per image: grad_outputs=v",
                "logvar": "differentiates logvar, the second output of the encoder; the penalty is on the mean mu "
                          "(encoder(x)[0])",
                "batch norm": "takes ONE norm over the whole batch's gradient (grad.norm()); take one norm per "
                              "image: grad.flatten(1).norm(dim=1)",
                "linf norm": "takes the L-infinity norm of the gradient; the penalty uses the L2 norm",
                "l1 norm": "takes the L1 norm of the gradient; the penalty uses the L2 norm",
            }
            if _matches(got, variants["batch norm"]):
                raise fail(f"{what} {msgs['batch norm']}")
            for name, msg in msgs.items():
                if _matches(got, variants[name]):
                    raise fail(f"{what} {msg}")
            same = call_student(student, _toy_encoder(), x.clone(), K, torch.Generator().manual_seed(seed), what=what)
            other = call_student(student, _toy_encoder(), x.clone(), K, torch.Generator().manual_seed(seed + 1),
                                 what=what)
            if not _matches(same.detach(), got) or _matches(other.detach(), got):
                raise fail(f"{what} does not draw v from the generator it is given (the same seeded generator "
                           f"must give the same penalty): v = torch.randn(N, d, generator=generator)")
            assert_close(got, ref.detach(), f"{what}'s penalty (K = {K})", atol=1e-5)
        # the gradient must reach the encoder's parameters, and be the right one
        if not out.requires_grad:
            raise fail(f"{what} returns a penalty without a graph: no gradient reaches the encoder, so the "
                       f"penalty trains nothing. Take the input gradient with create_graph=True "
                       f"(torch.autograd.grad(mu, x, grad_outputs=v, create_graph=True)) and do not .detach() it")
        try:
            gs = torch.autograd.grad(out.sum(), list(enc.parameters()), allow_unused=True)
        except RuntimeError as e:
            raise fail(f"{what}'s penalty cannot be differentiated for the encoder ({e}): use create_graph=True "
                       f"in torch.autograd.grad") from None
        ref_gs = torch.autograd.grad(ref.sum(), list(ref_enc.parameters()))
        for g, rg, name in zip(gs, ref_gs, ("W1", "W2")):
            if g is None or float(g.abs().max()) == 0.0:
                raise fail(f"{what}'s penalty passes no gradient to the encoder's weights {name}: the input "
                           f"gradient must stay in the graph (create_graph=True), so that the double backward "
                           f"reaches the weights")
            assert_close(g, rg, f"the gradient of {what}'s penalty for the encoder's {name}", atol=1e-5)
    return (f"gradient_norm_penalty: equal to the library's lipschitz_penalty on {n} images for K = 0.6 and 1, "
            f"values and gradients for the encoder (double backward through create_graph=True)")


def _quantiser_case():
    """z (N, d) away from 0 (where the sign is ambiguous), some beyond +-1, and the upstream gradient u."""
    g = torch.Generator().manual_seed(64)
    z = torch.randn(6, 10, generator=g) * 1.2
    z = torch.where(z.abs() < 0.05, z.sign() * 0.05 + z, z)
    u = torch.randn(6, 10, generator=g)
    return z, u


def _grad_of(out: torch.Tensor, z: torch.Tensor, u: torch.Tensor):
    if not out.requires_grad:
        return None
    g, = torch.autograd.grad((out * u).sum(), z, allow_unused=True)
    return torch.zeros_like(z) if g is None else g


@register
def check_quantiser(student) -> str:
    """Exercise 06.2: quantise(z, relax="hard", temperature=0.5) on latents z (N, d):
    "hard" H(z) = sign(z) in {-1, +1}; "straight-through" H(z) in value with the gradient of the identity;
    "soft" H~(z) = tanh(2 z / temperature) (the two-level soft quantiser of the library, differentiable,
    tending to H(z) as temperature -> 0). Compared with advlab.purifiers.lqvae.model.Quantiser(levels=2)."""
    from advlab.purifiers.lqvae.model import Quantiser
    what = "your quantise"
    q = Quantiser(levels=2, span=1.0)
    z, u = _quantiser_case()
    H = q.hard(z)
    # --- hard
    zr = z.clone().requires_grad_(True)
    out = call_student(student, zr, "hard", what=what)
    assert_tensor(out, f'{what}(z, "hard")', like=z)
    got = out.detach()
    if not _matches(got, H):
        if _matches(got, (z > 0).float()):
            raise fail(f'{what}(z, "hard") returns bits in {{0, 1}}; H maps to the levels {{-1, +1}}: '
                       f'torch.where(z > 0, 1.0, -1.0) (or 2 * (z > 0) - 1)')
        if _matches(got, z):
            raise fail(f'{what}(z, "hard") returns z unchanged: H(z) = sign(z), one of -1 and +1')
        if _matches(got, torch.round(z)) or _matches(got, torch.round(z).clamp(-1, 1)):
            raise fail(f'{what}(z, "hard") rounds to the nearest integer (0 is a level then); H has two levels '
                       f'-1 and +1: the sign of z')
        if _matches(got, -H):
            raise fail(f'{what}(z, "hard") has the sign flipped: positive z goes to +1')
        assert_close(got, H, f'{what}(z, "hard")')
    # --- straight-through
    zr = z.clone().requires_grad_(True)
    out = call_student(student, zr, "straight-through", what=what)
    assert_tensor(out, f'{what}(z, "straight-through")', like=z)
    got = out.detach()
    if not _matches(got, H):
        if _matches(got, z):
            raise fail(f'{what}(z, "straight-through") returns z in the forward pass: its VALUE must be H(z) '
                       f'(only the gradient is that of the identity): H(z) + (z - z.detach())')
        if _matches(got, torch.tanh(2 * z / 0.5)):
            raise fail(f'{what}(z, "straight-through") returns the soft value tanh(2 z / t); straight-through '
                       f'keeps the hard value H(z) and replaces only the gradient')
        if _matches(got, H + z):
            raise fail(f'{what}(z, "straight-through") returns H(z) + z: detach the part that must not count in '
                       f'the value, H(z) + (z - z.detach())')
        assert_close(got, H, f'{what}(z, "straight-through")\'s value (it must equal H(z))')
    g = _grad_of(out, zr, u)
    if g is None or float(g.abs().max()) == 0.0:
        raise fail(f'{what}(z, "straight-through") passes a zero gradient (sign and rounding have zero '
                   f'gradient almost everywhere): the gradient must be that of the identity. Write '
                   f'H(z) + (z - z.detach()), or z + (H(z) - z).detach()')
    if not _matches(g, u):
        if _matches(g, u * (z.abs() <= 1)):
            raise fail(f'{what}(z, "straight-through") clips the gradient to |z| <= 1 (a hard-tanh '
                       f'straight-through); the library Quantiser passes the gradient of the identity everywhere')
        if _matches(g, 2 * u):
            raise fail(f'{what}(z, "straight-through") passes twice the gradient of the identity: do not add z '
                       f'twice; H(z) + (z - z.detach())')
        t = torch.tanh(2 * z / 0.5)
        if _matches(g, u * (1 - t ** 2) * 4):
            raise fail(f'{what}(z, "straight-through") passes the gradient of the soft quantiser; '
                       f'straight-through passes that of the identity')
        raise fail(f'{what}(z, "straight-through"): the gradient is not that of the identity (e.g. entry 0: '
                   f'{g.flatten()[0].item():.4g} for an upstream gradient {u.flatten()[0].item():.4g})')
    # --- soft, at two temperatures, and its limit
    for t in (0.5, 0.2):
        zr = z.clone().requires_grad_(True)
        out = call_student(student, zr, "soft", temperature=t, what=what)
        assert_tensor(out, f'{what}(z, "soft", temperature={t})', like=z)
        got = out.detach()
        expected = q.soft(z, t)
        if not _matches(got, expected):
            cands = {
                "tanh(z / t)": (torch.tanh(z / t), "computes tanh(z / t); two levels at -1 and +1 give "
                                                   "tanh(2 z / t) (the softmax over exp(-(z - c)^2 / t))"),
                "tanh(2 z t)": (torch.tanh(2 * z * t), "multiplies by the temperature; divide: tanh(2 z / t) "
                                                       "(a small temperature makes the step sharper)"),
                "fixed t": (torch.tanh(2 * z / 0.5), "ignores the temperature argument (uses 0.5 whatever it "
                                                     "is given): tanh(2 z / temperature)"),
                "tanh(z)": (torch.tanh(z), "computes tanh(z) without the temperature: tanh(2 z / temperature)"),
                "sigmoid": (torch.sigmoid(2 * z / t), "returns a sigmoid in [0, 1]; the levels are -1 and +1: "
                                                      "tanh(2 z / temperature)"),
                "sigmoid4": (torch.sigmoid(4 * z / t), "returns a value in [0, 1] (the weight of level +1); "
                                                       "return the weighted mean of the levels, "
                                                       "tanh(2 z / temperature)"),
                "hard": (H, "returns H(z) itself: the soft quantiser is the smooth approximation "
                            "tanh(2 z / temperature)"),
            }
            for _, (c, msg) in cands.items():
                if _matches(got, c):
                    raise fail(f'{what}(z, "soft", temperature={t}) {msg}')
            assert_close(got, expected, f'{what}(z, "soft", temperature={t})')
        g = _grad_of(out, zr, u)
        if g is None or float(g.abs().max()) == 0.0:
            raise fail(f'{what}(z, "soft") passes no gradient: it must be differentiable (do not detach it)')
        assert_close(g, _grad_of(q.soft(zr, t), zr, u), f'the gradient of {what}(z, "soft", temperature={t})')
    with torch.no_grad():
        sharp = call_student(student, z.clone(), "soft", temperature=0.01, what=what)
    if not _matches(sharp.detach(), H):
        raise fail(f'{what}(z, "soft", temperature=0.01) should be (numerically) H(z): the soft quantiser '
                   f'tends to the hard one as the temperature goes to 0')
    return ("quantise: H(z) = sign(z) in {-1, +1}; straight-through has H's value and the gradient of the identity; "
            "soft = tanh(2 z / t) with its gradient, tending to H as t -> 0 (as the library's Quantiser)")
