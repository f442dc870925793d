"""advlab.checks for exercise set 08 (MLVGM): each check passes on a reference answer, reports a blank as
pending, and names the typical mistakes."""
import math

import pytest
import torch

from advlab import checks

pytestmark = pytest.mark.usefixtures("one_thread")


def _purify(hvae, x, alphas, temperature, generator, *, mistake=None):
    """The reference answer of exercise 08.1, with switches that make the typical mistakes."""
    feats, s = hvae.features(x), hvae.start(len(x))
    means = hvae.encode(x) if mistake == "unmixed" else None
    for i in range(hvae.n_levels):
        z_e, z_s = hvae.level_latents(i, s, feats[i], temperature, generator)
        if means is not None:
            z_e = means[i]
        a = alphas[i]
        z = a * z_e + (1 - a) * z_s if mistake == "swapped" else (1 - a) * z_e + a * z_s
        s = hvae.advance(i, s, z.detach() if mistake == "detached" else z)
    if mistake == "logits":
        return hvae.out(s)
    return hvae.to_image(s)


def _cosine(n, scale=1.0, *, mistake=None):
    """The reference answer of exercise 08.2, with switches that make the typical mistakes."""
    i = torch.arange(0 if mistake == "from_zero" else 1, n + (0 if mistake == "from_zero" else 1), dtype=torch.float64)
    c = torch.cos(math.pi * i / n)
    a = {"no_half": 1 - c, "flipped": (1 + c) / 2}.get(mistake, (1 - c) / 2)
    return (a * (1.0 if mistake == "no_scale" else scale)).float()


def test_level_mix_reference_passes():
    assert checks.check_level_mix(_purify) is True


@pytest.mark.parametrize("mistake, message", [
    ("swapped", "1 - alphas"), ("unmixed", "hvae.encode"), ("logits", "logits"), ("detached", "gradient")])
def test_level_mix_mistakes_are_named(mistake, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_level_mix(lambda *a: _purify(*a, mistake=mistake))


def test_cosine_reference_passes():
    assert checks.check_cosine_schedule(_cosine) is True


@pytest.mark.parametrize("mistake, message", [
    ("from_zero", "from 0"), ("no_half", "twice"), ("flipped", "flipped"), ("no_scale", "ignores scale")])
def test_cosine_mistakes_are_named(mistake, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_cosine_schedule(lambda n, scale=1.0: _cosine(n, scale, mistake=mistake))


def test_blanks_are_pending():
    def blank(*a, **k):
        raise NotImplementedError
    assert checks.check_level_mix(blank) is False
    assert checks.check_cosine_schedule(blank) is False
    assert checks.RESULTS["level_mix"] == "pending" and checks.RESULTS["cosine_schedule"] == "pending"
