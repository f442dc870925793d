"""advlab.checks for exercise set 09 (CMAP): each check passes on a reference answer, reports a blank as
pending, and names the typical mistakes."""
import pytest
import torch

from advlab import checks

pytestmark = pytest.mark.usefixtures("one_thread")


def _distribution_loss(u, *, mistake=None):
    """The reference answer of exercise 09.1, with switches that make the typical mistakes."""
    if mistake == "pooled":
        f = u.flatten()
        return (f.mean() ** 2 + (f.var() - 1) ** 2).expand(u.shape[1])
    if mistake == "per_latent":
        f = u.flatten(2)
        return (f.mean(2) ** 2 + (f.var(2) - 1) ** 2).mean(0)
    flat = u.transpose(0, 1).flatten(1)                                   # (N, K * D)
    mean, var = flat.mean(1), flat.var(1, correction=0 if mistake == "population" else 1)
    if mistake == "std":
        var = flat.std(1)
    if mistake == "detached":
        mean, var = mean.detach(), var.detach()
    if mistake == "no_square":
        return mean ** 2 + (var - 1).abs()
    return mean ** 2 + (var - 1) ** 2


def _majority_vote(logits, *, mistake=None):
    """The reference answer of exercise 09.2, with switches that make the typical mistakes."""
    if mistake == "soft":
        return logits.mean(0).argmax(1)
    if mistake == "probs":
        return torch.softmax(logits, 2).mean(0).argmax(1)
    if mistake == "summed":
        return logits.sum(0).argmax(1)
    counts = torch.nn.functional.one_hot(logits.argmax(2), logits.shape[2]).sum(0).float()   # (N, C)
    if mistake == "lowest":
        return counts.argmax(1)
    if mistake == "floats":
        return counts.argmax(1).float()
    top = counts == counts.max(1, keepdim=True).values                    # the tied labels
    return torch.where(top, logits.sum(0), torch.tensor(float("-inf"))).argmax(1)


def test_distribution_loss_reference_passes():
    assert checks.check_distribution_loss(_distribution_loss) is True
    assert checks.check_distribution_loss(lambda u: _distribution_loss(u, mistake="population")) is True


@pytest.mark.parametrize("mistake, message", [
    ("pooled", "single number|whole batch"), ("per_latent", "per latent"), ("std", "standard deviation"),
    ("no_square", "without squaring"), ("detached", "gradient")])
def test_distribution_loss_mistakes_are_named(mistake, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_distribution_loss(lambda u: _distribution_loss(u, mistake=mistake))


def test_majority_vote_reference_passes():
    assert checks.check_majority_vote(_majority_vote) is True


@pytest.mark.parametrize("mistake, message", [
    ("soft", "averages the logits"), ("probs", "averages the probabilities"), ("lowest", "smallest label"),
    ("summed", "averages the logits"), ("floats", "labels")])
def test_majority_vote_mistakes_are_named(mistake, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_majority_vote(lambda lg: _majority_vote(lg, mistake=mistake))


def test_blanks_are_pending():
    def blank(*a, **k):
        raise NotImplementedError
    assert checks.check_distribution_loss(blank) is False
    assert checks.check_majority_vote(blank) is False
    assert checks.RESULTS["distribution_loss"] == "pending" and checks.RESULTS["majority_vote"] == "pending"
