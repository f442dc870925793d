"""Checks for exercise set 05: VAE-GAN purification (one discriminator-guided step, the purifier in
latent space).

The purifier (Agarwal, Verma & Momin, "Enhancing Adversarial Robustness through a Purification
Network") decodes the VAE's code of x and climbs the discriminator's "real" score with normalised
steps. The checks use a tiny fixed discriminator, decoder and encoder: the step is checked in
image space (clipped to [0, 1]) and in latent space (not clipped) against the wrong variants
(descent, no or batch-wide or L∞ normalisation, wrong clipping); the latent purifier is compared
in value with advlab.purifiers.vaegan.purifier.VAEGANPurifier(space="latent") and in gradient with autograd
through it, so that a step direction treated as a constant (no create_graph) is caught: an
adaptive attacker needs the exact gradient.
"""
from __future__ import annotations

import torch

from .framework import (
    _matches, _untouched_requires_grad, _vjp, assert_close, assert_tensor, call_student, fail, fixed_images,
    register,
)


def _toy_vaegan_parts():
    """(D, decode): a tiny fixed discriminator D (images (N, 1, 28, 28) -> (N,) logits; nonlinear, so
    that its gradient depends on the image, and per example) and a tiny decoder (latents (N, 8) ->
    images in [0, 1]), both in eval mode with trainable parameters (a step that calls .backward()
    leaves a trace in their .grad). Fresh modules per call."""
    nn = torch.nn

    class ToyDiscriminator(nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(51)
            self.W = nn.Parameter(torch.randn(16, 784, generator=g) / 28.0)
            self.b = nn.Parameter(torch.randn(16, generator=g) * 0.1)
            self.v = nn.Parameter(torch.randn(16, generator=g))

        def forward(self, x):
            return torch.tanh(x.flatten(1) @ self.W.t() + self.b) @ self.v

    class ToyDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(52)
            self.W = nn.Parameter(torch.randn(784, 8, generator=g))
            self.b = nn.Parameter(torch.randn(784, generator=g) * 0.5)

        def forward(self, z):
            return torch.sigmoid(z @ self.W.t() + self.b).view(-1, 1, 28, 28)

    return ToyDiscriminator().eval(), ToyDecoder().eval()


def _ref_dstep(D, x, step_size, decode=None, *, sign=1.0, normalise="l2", clip=None):
    """The reference step of exercise 05.1 with switches for the typical mistakes: sign -1 (descent),
    normalise "l2" | "none" | "batch" (one norm for the whole batch) | "sign" | "linf", clip True/False
    (default: clip in image space only)."""
    xin = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        score = D(xin if decode is None else decode(xin))
        g, = torch.autograd.grad(score.sum(), xin)
    shape = (-1,) + (1,) * (x.dim() - 1)
    if normalise == "l2":
        d = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
    elif normalise == "batch":
        d = g / g.norm().clamp_min(1e-12)
    elif normalise == "sign":
        d = g.sign()
    elif normalise == "linf":
        d = g / g.flatten(1).abs().amax(1).clamp_min(1e-12).view(shape)
    else:
        d = g
    out = x.detach() + sign * step_size * d
    if (decode is None) if clip is None else clip:
        out = out.clamp(0, 1)
    return out


def _dstep_cases():
    """[(name, D, x, step_size, decode)]: an image batch with saturated pixels (where clipping matters)
    and a step large enough to leave [0, 1]; a latent batch with entries far outside [0, 1]."""
    D, dec = _toy_vaegan_parts()
    x = fixed_images(6, seed=53)
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(54)) * 1.5
    return [("image space (decode=None)", D, x, 3.0, None), ("latent space (decode given)", D, z, 0.5, dec)]


@register
def check_discriminator_step(student) -> str:
    """Exercise 05.1: discriminator_step(D, x, step_size, decode=None) -> one normalised ascent step on
    D's "real" logit. decode None: x images (N, C, H, W), g = grad_x D(x).sum(), return
    clip_[0,1](x + step_size * g / ||g||_2) with one L2 norm per example; decode given: x latents (N, d),
    g = grad_x D(decode(x)).sum(), return x + step_size * g / ||g||_2 (no clipping). The result is
    detached; D's (and decode's) parameters get no .grad."""
    what = "your discriminator_step"
    notes = []
    for where, D, x, s, dec in _dstep_cases():
        pre = f"in {where}: "
        xr = x.clone()
        args = (D, xr, s) if dec is None else (D, xr, s, dec)
        out = call_student(student, *args, what=what)
        _untouched_requires_grad(xr, what)
        if isinstance(out, torch.Tensor) and dec is not None and out.dim() == 4 and out.dim() != x.dim():
            raise fail(f"{pre}{what} returned images of shape {tuple(out.shape)}: in latent space the step is "
                       f"taken on z, and the function returns the new latent z (N, d), not Dec(z)")
        assert_tensor(out, f"{pre}{what}", like=x)
        for m in (D, dec):
            if m is not None and any(p.grad is not None for p in m.parameters()):
                raise fail(f"{pre}{what} left gradients in the {'discriminator' if m is D else 'decoder'}'s "
                           f"parameters (.grad is set): score.sum().backward() differentiates w.r.t. every "
                           f"parameter too; take the gradient in x alone with "
                           f"g, = torch.autograd.grad(score.sum(), x_in)")
        if out.requires_grad:
            raise fail(f"{pre}{what} returns a tensor that still requires grad (attached to the graph of the "
                       f"gradient computation): return the step .detach()ed")
        out = out.detach()
        ref = _ref_dstep(D, x, s, dec)
        if _matches(out, ref):
            continue
        variants = [
            (dict(sign=-1.0), "steps DOWN the discriminator's score (x - step_size * g): the purifier climbs "
                              "towards \"real\", x + step_size * g / ||g||"),
            (dict(normalise="none"), "does not normalise the gradient: divide g by its L2 norm per example, "
                                     "so that step_size is the L2 length of the step"),
            (dict(normalise="batch"), "normalises by ONE norm over the whole batch; each example's gradient "
                                      "has its own L2 norm: g.flatten(1).norm(dim=1), reshaped to broadcast"),
            (dict(normalise="sign"), "takes the sign of the gradient (a PGD-L∞ habit); this step is an L2 "
                                     "step: g / ||g||_2 per example"),
            (dict(normalise="linf"), "divides by the largest |g| entry (an L∞ normalisation); divide by the "
                                     "L2 norm per example, g.flatten(1).norm(dim=1)"),
        ]
        if dec is None:
            variants.append((dict(clip=False), "does not clip: in image space the step must stay an image, "
                                               "clamp the result to [0, 1]"))
        else:
            variants.append((dict(clip=True), "clips the latent to [0, 1]: only images live in [0, 1]; a "
                                              "latent z ~ N(0, I) must not be clipped"))
        for change, msg in variants:
            if _matches(out, _ref_dstep(D, x, s, dec, **change)):
                raise fail(f"{pre}{what} {msg}")
        extra = ("it also leaves [0, 1]: clamp the image step to [0, 1]" if dec is None else
                 "it also clips the latent to [0, 1], which only images need")
        for change, msg in variants[:-1]:
            both = dict(change) | dict(clip=dec is not None)
            if _matches(out, _ref_dstep(D, x, s, dec, **both)):
                raise fail(f"{pre}{what} {msg}; {extra}")
        assert_close(out, ref, f"{pre}{what}'s result", atol=1e-5)
    # the step size is an L2 length: check it on an interior image, where clipping does not act
    D, _ = _toy_vaegan_parts()
    xi = 0.25 + 0.5 * fixed_images(3, seed=55)
    out = call_student(student, D, xi, 0.05, what=what).detach()
    length = (out - xi).flatten(1).norm(dim=1)
    with torch.no_grad():
        gain = (D(out) - D(xi)).min().item()
    notes.append(f"on unclipped images each step has L2 length {length.mean().item():.3f} (= step_size 0.05) and "
                 f"raises every score (smallest gain {gain:.4f})")
    return ("discriminator_step: a normalised ascent step on D's real logit, one L2 norm per example, clipped "
            "to [0, 1] in image space and left unclipped in latent space; " + notes[0] + ". (Climbing the "
            "logit, sigmoid(logit) or log sigmoid(logit) gives the same step: normalisation keeps only the "
            "direction.)")


def _toy_vaegan():
    """A tiny VAE-GAN with the interface of advlab.purifiers.vaegan.model.VAEGAN (encode -> (mu, logvar), decode,
    discriminator, latent_dim 8), from _toy_vaegan_parts plus a linear encoder. Fresh per call."""
    nn = torch.nn
    D, dec = _toy_vaegan_parts()

    class ToyVAEGAN(nn.Module):
        def __init__(self):
            super().__init__()
            self.latent_dim = 8
            g = torch.Generator().manual_seed(56)
            self.E = nn.Parameter(torch.randn(8, 784, generator=g) / 28.0)
            self.decoder, self.discriminator = dec, D

        def encode(self, x):
            mu = (2 * x - 1).flatten(1) @ self.E.t()
            return mu, torch.zeros_like(mu) - 2.0

        def decode(self, z):
            return self.decoder(z)

    return ToyVAEGAN().eval()


def _ref_purify_latent(V, x, steps, step_size, constant_direction=False):
    """The VAE-GAN purifier in latent space, differentiable in x (x must require grad):
    z = mu(x); steps x z <- z + s * g / ||g||, g = grad_z D(Dec(z)) (create_graph); Dec(z).
    constant_direction: g taken without create_graph (the step direction is a constant for autograd)."""
    with torch.enable_grad():
        z = V.encode(x)[0]
        for _ in range(steps):
            g, = torch.autograd.grad(V.discriminator(V.decode(z)).sum(), z, create_graph=not constant_direction)
            z = z + step_size * g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return V.decode(z)


@register
def check_purify_latent(student) -> str:
    """Exercise 05.2: purify_latent(V, x, steps, step_size) -> Dec(z_K), z_0 = mu(x), K latent-space
    discriminator steps, differentiable in x with the exact gradient (create_graph=True) when x requires
    grad. Compared in value with VAEGANPurifier(space="latent").purify and in gradient (a vector-Jacobian
    product) with autograd through it."""
    from advlab.purifiers.vaegan.purifier import VAEGANPurifier
    what = "your purify_latent"
    V = _toy_vaegan()
    x = fixed_images(5, seed=57)
    u = fixed_images(5, seed=58) - 0.5
    steps, s = 3, 0.5
    lib = VAEGANPurifier(V, torch.nn.Identity(), steps=steps, step_size=s, space="latent")
    xr = x.clone().requires_grad_(True)
    out = call_student(student, V, xr, steps, s, what=what)
    assert_tensor(out, what, like=x)
    if any(p.grad is not None for p in V.parameters()):
        raise fail(f"{what} left gradients in the VAE-GAN's parameters (.grad is set): take the gradient in z "
                   f"alone with torch.autograd.grad(score.sum(), z, create_graph=True)")
    with torch.no_grad():
        value = lib.purify(x)
    v = out.detach()
    if not _matches(v, value):
        with torch.no_grad():
            mu = V.encode(x)[0]
        if _matches(v, V.decode(mu).detach()):
            raise fail(f"{what} returns Dec(mu(x)), the plain reconstruction: take the {steps} guided steps on z "
                       f"before decoding")
        for k in (steps - 1, steps + 1):
            with torch.no_grad():
                alt = VAEGANPurifier(V, torch.nn.Identity(), steps=k, step_size=s, space="latent").purify(x)
            if _matches(v, alt):
                raise fail(f"{what} takes {k} guided steps instead of {steps}: loop `steps` times")
        with torch.no_grad():
            img = VAEGANPurifier(V, torch.nn.Identity(), steps=steps, step_size=s, space="image").purify(x)
        if _matches(v, img):
            raise fail(f"{what} takes the steps in image space; here they are taken on the latent z, and the "
                       f"result is Dec(z_K)")
        assert_close(v, value, f"{what}'s purified images (compared with VAEGANPurifier(space='latent'))",
                     atol=1e-5)
    if not out.requires_grad:
        raise fail(f"{what} returns a tensor that does not require grad although x does: no gradient reaches x, "
                   f"so an attacker sees nothing (the gradient masking of lecture 04). Do not detach z; keep the "
                   f"graph of every step")
    try:
        g, = torch.autograd.grad((out * u).sum(), xr)
    except RuntimeError as e:
        raise fail(f"{what}'s output is not connected to x in the autograd graph ({e})") from None
    expected = _vjp(lib.purify, x, u)
    if _matches(g, expected):
        return (f"purify_latent: the values of VAEGANPurifier(steps={steps}, space='latent') and the exact gradient "
                f"through all {steps} guided steps (create_graph=True), as an adaptive attacker needs it")
    const = _vjp(lambda t: _ref_purify_latent(V, t, steps, s, constant_direction=True), x, u)
    if _matches(g, const):
        raise fail(f"{what} has the right values but treats each step's direction g / ||g|| as a constant for "
                   f"autograd (the gradient of the score was taken without create_graph=True, or detached): the "
                   f"gradient w.r.t. x then misses how the direction itself depends on x. Pass create_graph=True "
                   f"to torch.autograd.grad")
    assert_close(g, expected, f"the gradient through {what}", atol=1e-5)
    raise fail(f"{what}'s gradient differs")  # pragma: no cover - assert_close raised
