"""Checks for exercise set 08: MLVGM purification (the per-level interpolation, the cosine schedule).

MLVGM purification (Serez, Cristani, Del Bue, Murino & Morerio) decodes, level by level from the coarsest,
z_i = (1 - a_i) z_e_i + a_i z_s_i: z_e_i the posterior mean given x *and the mixed levels above*, z_s_i a
prior draw at temperature T. The purification is compared with HVAEModel.decode_mixed on a tiny seeded
HVAE with the same random draws; the typical slips (the weights swapped, the posterior means of the
unmixed path, logits instead of the decoder's mean) are recognised and named. The cosine schedule
a_i = (1 - cos(pi i / n)) / 2, i = 1..n, is compared with schedules.cosine for several n and scales, and
the usual off-by-one (i = 0..n-1), the missing halving and the flipped cosine are named.
"""
from __future__ import annotations

import math

import torch

from .framework import assert_close, assert_tensor, call_student, fail, fixed_images, register


def _tiny_hvae():
    """A tiny seeded HVAEModel whose zero-initialised layers get random weights (so x reaches every level)."""
    from advlab.purifiers.mlvgm.model import HVAEModel
    torch.manual_seed(81)
    m = HVAEModel(width=8, z_channels=(2, 2, 1))
    with torch.no_grad():
        for p in m.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.3)
    return m.eval().requires_grad_(False)


def _unmixed_path(m, x, a, temperature, seed):
    """The slip of mixing encode(x)'s means (each conditioned on the *means* above) with prior draws taken
    along the mixed path: what a student gets by computing all z_e first."""
    z_means = m.encode(x)
    feats, s, g = m.features(x), m.start(len(x)), torch.Generator().manual_seed(seed)
    for i in range(m.n_levels):
        _, z_s = m.level_latents(i, s, feats[i], temperature, g)
        s = m.advance(i, s, (1 - a[i]) * z_means[i] + a[i] * z_s)
    return m.to_image(s)


@register
def check_level_mix(student) -> str:
    """Exercise 08.1: purify(hvae, x, alphas, temperature, generator) -> (N, C, 28, 28) in [0, 1], the
    decoder's mean after mixing z_i = (1 - a_i) z_e_i + a_i z_s_i level by level along the mixed path:
    equal to hvae.decode_mixed(x, alphas, temperature, generator) with the same draws."""
    what = "your purify"
    m = _tiny_hvae()
    x = fixed_images(6, seed=82)
    cases = ((torch.tensor([0.2, 0.6, 0.9]), 0.6), (torch.tensor([0.0, 0.0, 0.0]), 0.6),
             (torch.tensor([1.0, 0.5, 0.0]), 1.0))
    for a, t in cases:
        with torch.no_grad():
            out = call_student(student, m, x, a, t, torch.Generator().manual_seed(83), what=what)
            ref = m.decode_mixed(x, a, t, torch.Generator().manual_seed(83))
        assert_tensor(out, what, like=ref)
        if torch.allclose(out, ref, atol=1e-5):
            continue
        with torch.no_grad():
            swapped = m.decode_mixed(x, 1 - a, t, torch.Generator().manual_seed(83))
            unmixed = _unmixed_path(m, x, a, t, 83)
            logits = torch.logit(ref.clamp(1e-6, 1 - 1e-6))
        if torch.allclose(out, swapped, atol=1e-5):
            raise fail(f"{what} with alphas {a.tolist()} gives what the library gives for 1 - alphas: a_i weighs the "
                       f"prior draw, z_i = (1 - a_i) * z_e + a_i * z_s (a_i = 0 keeps the input's code)")
        if torch.allclose(out, unmixed, atol=1e-5):
            raise fail(f"{what} mixes the posterior means of hvae.encode(x), each conditioned on the *means* of the "
                       f"levels above; take z_e from hvae.level_latents(i, s, feats[i], ...) inside the loop, so "
                       f"that it is conditioned on the mixed levels above (the paper's top-down path)")
        if torch.allclose(out, logits, atol=1e-4):
            raise fail(f"{what} returns the decoder's logits; return its mean, hvae.to_image(s) (a sigmoid)")
        if float(out.min()) < 0 or float(out.max()) > 1:
            raise fail(f"{what} returns values outside [0, 1] ({float(out.min()):.3f} to {float(out.max()):.3f}): "
                       f"finish with hvae.to_image(s)")
        assert_close(out, ref, f"{what} with alphas {a.tolist()}, temperature {t} (against hvae.decode_mixed with the "
                     f"same generator: one level_latents call per level, in order, draws from the generator you were given)",
                     atol=1e-5, rtol=1e-4)
    xr = x.clone().requires_grad_(True)
    out = call_student(student, m, xr, torch.tensor([0.3, 0.6, 0.9]), 0.6, torch.Generator().manual_seed(84), what=what)
    if not out.requires_grad:
        raise fail(f"{what} cuts the gradient to x (no torch.no_grad or .detach() inside): the adaptive attack "
                   f"differentiates through the purification")
    return "purify mixes each level along the top-down path, exactly as decode_mixed does"


@register
def check_cosine_schedule(student) -> str:
    """Exercise 08.2: cosine_schedule(n, scale=1.0) -> (n,) float tensor, a_i = scale (1 - cos(pi i / n)) / 2 for
    i = 1..n: equal to advlab.purifiers.mlvgm.schedules.cosine(n) * scale."""
    from advlab.purifiers.mlvgm.schedules import cosine
    what = "your cosine_schedule"
    for n in (3, 4, 7, 2, 1):      # n = 3 first: there every slip below gives a different answer
        for scale in (1.0, 0.7):
            out = call_student(student, n, scale=scale, what=f"{what}({n}, scale={scale})")
            assert_tensor(out, f"{what}({n}, scale={scale})", shape=(n,))
            out = out.double()
            ref = cosine(n).double() * scale
            if torch.allclose(out, ref, atol=1e-6):
                continue
            i = torch.arange(n, dtype=torch.float64)
            if torch.allclose(out, scale * (1 - torch.cos(math.pi * i / n)) / 2, atol=1e-6):
                raise fail(f"{what}({n}) counts the levels from 0: i runs from 1 to n (the coarsest level is i = 1), "
                           f"so the finest level gets a_n = 1 (times scale)")
            if torch.allclose(out, 2 * ref, atol=1e-6):
                raise fail(f"{what}({n}) is twice the schedule: halve 1 - cos(pi i / n), so the values stay in [0, 1]")
            if torch.allclose(out, scale - ref, atol=1e-6):
                raise fail(f"{what}({n}) is flipped: it uses 1 + cos instead of 1 - cos (coarse levels must get "
                           f"small a_i: keep the class, resample the detail)")
            if scale != 1.0 and torch.allclose(out, ref / scale, atol=1e-6):
                raise fail(f"{what}({n}, scale={scale}) ignores scale: multiply every a_i by it")
            assert_close(out, ref, f"{what}({n}, scale={scale})", atol=1e-6, rtol=1e-6)
    return "cosine_schedule gives (1 - cos(pi i / n)) / 2 for i = 1..n, times scale"
