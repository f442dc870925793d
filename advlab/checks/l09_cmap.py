"""Checks for exercise set 09: CMAP's latent distribution loss and its majority vote.

CMAP (Zhang, Yang, Luo, Chen, Wang, Liu, Han & Tan) optimises K latents per image; the distribution term
keeps each image's K latents looking like prior draws: with u the standardised latents (z = T u, prior
N(0, I) for u), penalty = mean(u)^2 + (var(u) - 1)^2 over *all coordinates of one image's K latents*. It is
compared with advlab.purifiers.cmap.purifier.distribution_penalty on latents where the usual slips differ:
statistics pooled over the whole batch, statistics per latent instead of per image, the standard deviation
for the variance, the prior's scale forgotten (z instead of u), a missing square. The variance's
denominator (n or n - 1) is accepted either way: the shapes here make the two differ by under 1%.

The vote: K predictions per image, the label most of them chose; a tie goes to the tied label with the
largest summed logit. Compared with advlab.purifiers.voting.aggregate(logits, "vote").argmax(1) on logits
built with ties, with a soft vote that disagrees with the majority, and with a tie the lowest index would
lose; the slips named: averaging (or summing) logits or probabilities, a soft vote; voting over the batch
instead of the K draws; ties broken by the smallest label.
"""
from __future__ import annotations

import torch

from .framework import assert_close, assert_tensor, call_student, fail, register


def _latents(seed: int = 91) -> torch.Tensor:
    """(K, N, C, H, W) = (4, 5, 1, 6, 6) standardised latents whose images differ in mean and spread, and whose
    latents differ within an image (so per-latent and per-image statistics disagree)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(4, 5, 1, 6, 6, generator=g, dtype=torch.float64)
    shift = torch.tensor([0.0, 0.5, -1.0, 0.2, 1.5], dtype=torch.float64).view(1, 5, 1, 1, 1)
    scale = torch.tensor([1.0, 2.0, 0.5, 1.3, 0.8], dtype=torch.float64).view(1, 5, 1, 1, 1)
    per_k = torch.tensor([-0.6, -0.2, 0.3, 0.7], dtype=torch.float64).view(4, 1, 1, 1, 1)
    return (u * scale + shift + per_k).float()


@register
def check_distribution_loss(student) -> str:
    """Exercise 09.1: distribution_loss(u) with u (K, N, C, H, W) the K standardised latents of N images ->
    (N,): mean(u)^2 + (var(u) - 1)^2 per image, over all K * C * H * W coordinates of that image's latents."""
    from advlab.purifiers.cmap.purifier import distribution_penalty
    what = "your distribution_loss"
    u = _latents()
    out = call_student(student, u, what=what)
    ref = distribution_penalty(u)
    assert_tensor(out, what, shape=ref.shape)
    flat = u.transpose(0, 1).flatten(1)                                    # (N, K * D)
    population = flat.mean(1).pow(2) + (flat.var(1, correction=0) - 1).pow(2)
    if torch.allclose(out.float(), ref, rtol=1e-4, atol=1e-5) or torch.allclose(out.float(), population, rtol=1e-4,
                                                                                 atol=1e-5):
        pass
    else:
        pooled = u.flatten()
        whole = (pooled.mean().pow(2) + (pooled.var() - 1).pow(2)).expand(len(ref))
        per_latent = u.flatten(2)                                          # (K, N, D)
        per_latent = (per_latent.mean(2).pow(2) + (per_latent.var(2) - 1).pow(2)).mean(0)
        std = flat.mean(1).pow(2) + (flat.std(1) - 1).pow(2)
        no_square = flat.mean(1).pow(2) + (flat.var(1) - 1).abs()
        mean_no_square = flat.mean(1).abs() + (flat.var(1) - 1).pow(2)
        for cand, why in ((whole, "pools the statistics over the whole batch (one number for every image); take "
                                  "mean and var per image, over its K latents together: u.transpose(0, 1).flatten(1)"),
                          (per_latent, "computes the statistics per latent and averages them; CMAP's term is about the "
                                       "K latents *together* (their empirical distribution), so flatten all K latents "
                                       "of one image into one vector before taking mean and var"),
                          (std, "uses the standard deviation; the term is (var(u) - 1)^2 with the variance"),
                          (no_square, "takes |var(u) - 1| without squaring it"),
                          (mean_no_square, "takes |mean(u)| without squaring it")):
            if out.shape == cand.shape and torch.allclose(out.float(), cand, rtol=1e-4, atol=1e-5):
                raise fail(f"{what} {why}")
        z = u * 80.0
        got_z = call_student(student, z, what=what)
        if torch.allclose(got_z.float(), distribution_penalty(z), rtol=1e-4, atol=1e-5):
            raise fail(f"{what} matches the penalty only after the latents are standardised; is the 1 in (var - 1)^2 "
                       "right for the u you were given? (It is: u = z / T has prior variance 1)")
        assert_close(out.float(), ref, f"{what} (against mean(u)^2 + (var(u) - 1)^2 over each image's K latents)",
                     atol=1e-4, rtol=1e-3)
    ur = u.clone().requires_grad_(True)
    val = call_student(student, ur, what=what)
    if not val.requires_grad:
        raise fail(f"{what} returns a value without a gradient in u: the search steps on it with Adam, so compute it "
                   "with torch operations on u (no .item(), .detach() or numpy)")
    grad, = torch.autograd.grad(val.sum(), ur)
    flat_r = ur.transpose(0, 1).flatten(1)
    refs = [torch.autograd.grad((flat_r.mean(1).pow(2) + (flat_r.var(1, correction=c) - 1).pow(2)).sum(), ur,
                                retain_graph=True)[0] for c in (0, 1)]
    if not any(torch.allclose(grad, r, rtol=1e-3, atol=1e-5) for r in refs):
        ref_grad = refs[1]
        raise fail(f"{what}'s gradient in u differs from the reference (largest gap "
                   f"{float((grad - ref_grad).abs().max()):.3g}): detach nothing inside the loss")
    at_prior = call_student(student, torch.randn(64, 3, 1, 8, 8, generator=torch.Generator().manual_seed(92)), what=what)
    return (f"distribution_loss matches CMAP's term on 5 images of 4 latents, with its gradient; prior draws score "
            f"{float(at_prior.mean()):.4f} on average (near 0), the image shifted by 1.5 scores {float(out[4]):.2f}")


def _vote_cases() -> list[tuple[torch.Tensor, str]]:
    """(K, N, C) logits where majority vote, soft vote and naive tie-breaks disagree, with a description."""
    cases = []
    # image 0: labels 2, 2, 5 -> 2, though label 5's single logit is huge (a soft vote says 5)
    # image 1: labels 1, 3 tied at 2 votes each over K = 4; summed logits favour 3 (the lowest index says 1)
    # image 2: labels 0, 0, 4, 4 tie; a non-tied class 7 has the largest summed logit (must not win)
    k, c = 4, 8
    logits = torch.full((k, 3, c), -2.0)
    for j, lab in enumerate((2, 2, 5, 2)):
        logits[j, 0, lab] = 1.0 if lab == 2 else 40.0
    logits[1, 0, 5] = 0.5
    for j, (lab, val) in enumerate(((1, 1.0), (3, 3.0), (1, 1.2), (3, 2.5))):
        logits[j, 1, lab] = val
    for j, lab in enumerate((0, 0, 4, 4)):
        logits[j, 2, lab] = 2.0 + 0.1 * (lab == 4)
        logits[j, 2, 7] = 1.9
    cases.append((logits, "3 images built to separate the rules"))
    g = torch.Generator().manual_seed(93)
    rand = torch.randn(5, 40, 10, generator=g) * 2
    rand[:, :, 3] += 1.0
    cases.append((rand, "40 random images, K = 5"))
    return cases


@register
def check_majority_vote(student) -> str:
    """Exercise 09.2: majority_vote(logits) with logits (K, N, C) from K draws -> (N,) int64 labels: the label
    most of the K draws predict; a tie goes to the tied label with the largest summed logit over the K draws."""
    from advlab.purifiers.voting import aggregate
    what = "your majority_vote"
    for logits, name in _vote_cases():
        out = call_student(student, logits, what=what)
        ref = aggregate(logits, "vote").argmax(1)
        assert_tensor(out, what, shape=ref.shape)
        if out.dtype not in (torch.int64, torch.int32):
            raise fail(f"{what} returns {out.dtype}; return the labels (argmax indices, int64), not scores")
        if torch.equal(out.long(), ref):
            continue
        counts = torch.nn.functional.one_hot(logits.argmax(2), logits.shape[2]).sum(0)        # (N, C)
        soft = logits.mean(0).argmax(1)                                                      # = summed logits
        soft_p = torch.softmax(logits, 2).mean(0).argmax(1)
        lowest = counts.argmax(1)                                                            # first of the tied
        batch = torch.nn.functional.one_hot(logits.argmax(2), logits.shape[2]).sum(1).argmax(1)   # (K,) over N
        for cand, why in ((soft, "averages the logits (a soft vote): one confident draw outvotes the others; count "
                                 "each draw's argmax label instead"),
                          (soft_p, "averages the probabilities (a soft vote); count each draw's argmax label instead"),
                          (lowest, "breaks ties by the smallest label (argmax of the counts); among the tied labels "
                                   "take the one with the largest summed logit"),
                          ):
            if torch.equal(out.long(), cand):
                raise fail(f"{what} on {name} {why}")
        if out.shape == batch.shape and torch.equal(out.long(), batch):
            raise fail(f"{what} votes across the batch (dimension 1) instead of across the K draws (dimension 0)")
        bad = (out.long() != ref).nonzero().flatten()
        i = int(bad[0])
        raise fail(f"{what} on {name}: image {i} gets {int(out[i])}, expected {int(ref[i])} (votes per label "
                   f"{counts[i].tolist()}, summed logits {[round(v, 2) for v in logits[:, i].sum(0).tolist()]})")
    return ("majority_vote agrees with CMAP's vote on 43 images: majority over soft votes, ties to the tied label "
            "with the largest summed logit")
