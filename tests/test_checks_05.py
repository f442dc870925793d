"""advlab.checks for exercise set 05 (VAE-GAN purification): the check passes on a reference answer
and on the library's own `discriminator_step`, reports a blank as pending, and names the typical
mistakes."""
import pytest
import torch

from advlab import checks
from advlab.defenses import discriminator_step as library_step

pytestmark = pytest.mark.usefixtures("one_thread")


def _step(D, x, step_size, decode=None, *, sign=1.0, norm="l2", clip="image", backward=False, detach=True,
          in_place=False, return_image=False, mark_input=False):
    """The reference answer of exercise 05.1, with switches that make the typical mistakes."""
    if mark_input:
        xin = x.requires_grad_(True)
    else:
        xin = x.detach().clone().requires_grad_(True)
    score = D(xin if decode is None else decode(xin))
    if backward:
        score.sum().backward()
        g = xin.grad
    else:
        g, = torch.autograd.grad(score.sum(), xin, create_graph=not detach)
    shape = (-1,) + (1,) * (x.dim() - 1)
    if norm == "l2":
        d = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
    elif norm == "batch":
        d = g / g.norm()
    elif norm == "sign":
        d = g.sign()
    else:
        d = g
    out = (xin if not detach else xin.detach()) + sign * step_size * d
    if clip == "always" or (clip == "image" and decode is None):
        out = out.clamp(0, 1)
    if in_place:
        x.add_(0.01)
    if return_image and decode is not None:
        return decode(out).detach()
    return out.detach() if detach else out


def discriminator_step(D, x, step_size, decode=None):
    return _step(D, x, step_size, decode)


def test_reference_and_library_pass(capsys):
    assert checks.check_discriminator_step(discriminator_step) is True
    assert checks.check_discriminator_step(library_step) is True
    assert "L2 length 0.050" in capsys.readouterr().out
    assert checks.RESULTS["discriminator_step"] == "passed"


def test_blank_is_pending(capsys):
    def blank(D, x, step_size, decode=None):
        raise NotImplementedError

    assert checks.check_discriminator_step(blank) is False
    assert checks.PENDING in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, needle", [
    (dict(sign=-1.0), "steps DOWN"),
    (dict(norm="none"), "does not normalise"),
    (dict(norm="batch"), "ONE norm over the whole batch"),
    (dict(norm="sign"), "sign of the gradient"),
    (dict(clip="never"), "does not clip"),
    (dict(clip="always"), "clips the latent"),
    (dict(norm="none", clip="never"), "it also leaves [0, 1]"),
    (dict(backward=True), "left gradients in the discriminator"),
    (dict(detach=False), "still requires grad"),
    (dict(in_place=True), "modified its input"),
    (dict(return_image=True), "returns the new latent z"),
    (dict(mark_input=True), "switched on requires_grad"),
])
def test_mistakes_are_named(kwargs, needle):
    def wrong(D, x, step_size, decode=None):
        return _step(D, x, step_size, decode, **kwargs)

    with pytest.raises(AssertionError, match=None) as e:
        checks.check_discriminator_step(wrong)
    assert needle in str(e.value), str(e.value)
    assert checks.RESULTS["discriminator_step"] == "failed"


def test_wrong_shape_and_type():
    with pytest.raises(AssertionError, match="shape"):
        checks.check_discriminator_step(lambda D, x, s, decode=None: discriminator_step(D, x, s, decode)[:-1])
    with pytest.raises(AssertionError, match="expected a torch.Tensor"):
        checks.check_discriminator_step(lambda D, x, s, decode=None: discriminator_step(D, x, s, decode).tolist())


def _purify(V, x, steps, step_size, *, create_graph=True, detach=False, extra=0, space="latent", backward=False):
    """The reference answer of exercise 05.2, with switches that make the typical mistakes."""
    z = V.encode(x)[0]
    if space == "image":
        img = V.decode(z)
        for _ in range(steps):
            g, = torch.autograd.grad(V.discriminator(img).sum(), img, create_graph=True)
            img = (img + step_size * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)
        return img
    for _ in range(steps + extra):
        score = V.discriminator(V.decode(z)).sum()
        if backward:
            score.backward(retain_graph=True)
            g = torch.autograd.grad(score, z, create_graph=True)[0]
        else:
            g, = torch.autograd.grad(score, z, create_graph=create_graph)
        z = z + step_size * g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if detach:
            z = z.detach()
    return V.decode(z)


def purify_latent(V, x, steps, step_size):
    return _purify(V, x, steps, step_size)


def test_purify_latent_reference_passes():
    assert checks.check_purify_latent(purify_latent) is True
    assert checks.RESULTS["purify_latent"] == "passed"


@pytest.mark.parametrize("kwargs, needle", [
    (dict(create_graph=False), "treats each step's direction"),
    (dict(detach=True), "does not require grad"),
    (dict(extra=1), "takes 4 guided steps instead of 3"),
    (dict(extra=-1), "takes 2 guided steps instead of 3"),
    (dict(extra=-3), "plain reconstruction"),
    (dict(space="image"), "in image space"),
    (dict(backward=True), "left gradients"),
])
def test_purify_latent_mistakes_are_named(kwargs, needle):
    def wrong(V, x, steps, step_size):
        return _purify(V, x, steps, step_size, **kwargs)

    with pytest.raises(AssertionError) as e:
        checks.check_purify_latent(wrong)
    assert needle in str(e.value), str(e.value)


def test_purify_latent_blank_is_pending(capsys):
    def blank(V, x, steps, step_size):
        raise NotImplementedError

    assert checks.check_purify_latent(blank) is False
    assert checks.PENDING in capsys.readouterr().out
