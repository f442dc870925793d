"""Checks for exercise set 07: CARSO (its robust aggregation of K draws, one adversarially balanced batch).

CARSO (Ballarin, Ansuini & Bortolussi) classifies K reconstructions and aggregates their logits l_jc
as p_c ∝ exp(Σ_j exp(l_jc)). The aggregation is compared with advlab.purifiers.voting.aggregate(...,
"carso") on moderate logits, on a case built so that CARSO's rule and the plain means disagree, and on
large logits, where anything but the log domain in float64 overflows or underflows. The balanced batch
is checked on a tiny fixed classifier: the number of rows per attack setting (advlab's split_counts),
clean targets, untouched clean rows, each setting's own budget (eps / 2 or eps) and the attacks'
effect on the classifier's loss.
"""
from __future__ import annotations

import torch

from .framework import assert_close, assert_in_box, assert_tensor, call_student, fail, fixed_images, register


def _aggregation_cases():
    """(name, logits (K, N, C)) of the three situations the check runs."""
    g = torch.Generator().manual_seed(71)
    moderate = torch.randn(6, 5, 10, generator=g) * 1.5
    # image 0: one draw sure of class 2 (logit 6), seven mildly for class 5 (logit 2.5, the others 0):
    # CARSO's rule picks 2, the mean softmax and the mean logit pick 5
    split = torch.zeros(8, 2, 10)
    split[0, 0, 2] = 6.0
    split[1:, 0, 5] = 2.5
    split[:, 1] = torch.randn(8, 10, generator=g)
    large = torch.randn(4, 3, 10, generator=g) * 2 + 60.0       # exp(exp(60)) overflows everything
    large[:, :, 3] += 1.0
    return (("moderate logits", moderate), ("one confident draw against seven mild ones", split),
            ("large logits (about 60)", large))


@register
def check_carso_aggregation(student) -> str:
    """Exercise 07.1: carso_aggregate(logits) -> (N, C) log p_c, p_c ∝ exp(Σ_j exp(l_jc)), from logits
    (K, N, C): equal to voting.aggregate(logits, "carso") where that is above its floor of -1e4, finite
    everywhere, and right about the winner on large logits."""
    from advlab.purifiers.voting import aggregate
    what = "your carso_aggregate"
    for name, logits in _aggregation_cases():
        out = call_student(student, logits, what=what)
        assert_tensor(out, what, shape=logits.shape[1:])
        out = out.double()
        ref = aggregate(logits, "carso").double()
        if not bool(torch.isfinite(out).all()):
            raise fail(f"{what} gives {int((~torch.isfinite(out)).sum())} non-finite entries on {name}: "
                       f"exp(Σ_j exp(l)) overflows; stay in the log domain (S_c = exp(logsumexp_j l_jc) in "
                       f"float64, then log_softmax(S))")
        if not bool((out.argmax(1) == ref.argmax(1)).all()):
            mean_p = aggregate(logits, "mean_probs").argmax(1)
            mean_l = aggregate(logits, "mean_logits").argmax(1)
            got = out.argmax(1)
            hint = (" — that is the mean softmax's decision (average of probabilities), not CARSO's"
                    if torch.equal(got, mean_p) else " — that is the mean logit's decision, not CARSO's"
                    if torch.equal(got, mean_l) else "")
            raise fail(f"{what} picks classes {got.tolist()} on {name}, CARSO's rule picks "
                       f"{ref.argmax(1).tolist()}{hint}: exponentiate each draw's logits, sum over the draws, "
                       f"and use that sum S_c itself as the exponent: p_c ∝ exp(S_c)")
        shift = (out - ref)[:, :1]
        if bool((shift.abs() > 1e-4).any()) and torch.allclose(out - shift, ref, atol=1e-4):
            raise fail(f"{what} is CARSO's score up to a constant per image on {name}, but not normalised: "
                       f"return log p_c, i.e. log_softmax over the classes, so that exp(out) sums to 1 per image")
        floor = ref > -1e4 + 1
        if not bool(torch.isclose(out[floor], ref[floor], atol=1e-4, rtol=1e-5).all()):
            assert_close(out[floor], ref[floor], f"{what} (log p_c, on {name})", atol=1e-4, rtol=1e-5)
        probs = out.exp().sum(1)
        if not torch.allclose(probs, torch.ones_like(probs), atol=1e-6):
            raise fail(f"{what}: exp(out) sums to {probs.tolist()} over the classes on {name}; expected 1 per image")
    return "carso_aggregate matches CARSO's rule, also where one confident draw outvotes seven mild ones and on large logits"


def _tiny_classifier() -> torch.nn.Module:
    """A fixed linear classifier 784 -> 10 (seeded weights), in eval mode, gradients off for its weights."""
    g = torch.Generator().manual_seed(72)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(10, 784, generator=g) / 10)
        net[1].bias.zero_()
    return net.eval().requires_grad_(False)


@register
def check_balanced_batch(student) -> str:
    """Exercise 07.2: balanced_batch(classifier, x, y, fraction=0.5, eps=0.1, generator=None) ->
    (inputs, targets, kinds): round(fraction * N) rows perturbed, split over the four settings as
    advlab.purifiers.carso.train.split_counts (kinds 1..4: PGD-40 at eps/2, PGD-40 at eps, FGSM at eps/2,
    FGSM at eps; 0: clean), targets the clean images."""
    from advlab.purifiers.carso.train import split_counts
    what = "your balanced_batch"
    clf = _tiny_classifier()
    x = fixed_images(22, seed=73)
    with torch.no_grad():
        y = clf(x).argmax(1)
    eps = 0.1
    for fraction in (0.5, 0.75):
        out = call_student(student, clf, x, y, fraction=fraction, eps=eps, generator=torch.Generator().manual_seed(74),
                           what=what)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise fail(f"{what} must return three tensors (inputs, targets, kinds), got {type(out).__name__}"
                       + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
        inputs, targets, kinds = out
        assert_tensor(inputs, f"{what}'s inputs", like=x)
        assert_tensor(targets, f"{what}'s targets", like=x)
        assert_tensor(kinds, f"{what}'s kinds", shape=(len(x),), dtype=torch.long)
        assert_in_box(inputs, f"{what}'s inputs", tol=1e-6)
        if not torch.equal(targets, x):
            adv = bool(torch.equal(targets, inputs))
            raise fail(f"{what}'s targets are not the clean images" + (" — they are the perturbed inputs" if adv else "")
                       + ": CARSO's decoder always learns to reproduce the clean image, whatever it was conditioned on")
        want = split_counts(len(x), fraction)
        got = [int((kinds == k).sum()) for k in range(5)]
        if got != want:
            raise fail(f"{what} with {len(x)} rows and fraction {fraction}: rows per kind (clean, PGD eps/2, PGD eps, "
                       f"FGSM eps/2, FGSM eps) are {got}, expected {want}: round(fraction * N) perturbed rows, "
                       f"split as evenly as possible, the first settings taking the remainder")
        clean = kinds == 0
        if not torch.equal(inputs[clean], x[clean]):
            raise fail(f"{what} changed {int((inputs[clean] != x[clean]).flatten(1).any(1).sum())} rows of kind 0: "
                       f"clean rows must stay exactly the images")
        delta = (inputs - x).flatten(1).abs().max(1).values
        for k, budget, name in ((1, eps / 2, "PGD at eps/2"), (2, eps, "PGD at eps"), (3, eps / 2, "FGSM at eps/2"),
                                (4, eps, "FGSM at eps")):
            rows = kinds == k
            if not rows.any():
                continue
            if bool((delta[rows] > budget + 1e-5).any()):
                raise fail(f"{what}: rows of kind {k} ({name}) move pixels by up to {delta[rows].max().item():.4f}, "
                           f"over their budget {budget:g}" + (" — the half-budget settings use eps / 2" if budget < eps else ""))
            if bool((delta[rows] < 0.9 * budget).any()):
                raise fail(f"{what}: rows of kind {k} ({name}) move pixels by at most "
                           f"{delta[rows].min().item():.4f}; the attack should use (nearly) its whole budget {budget:g}")
        with torch.no_grad():
            loss = torch.nn.functional.cross_entropy(clf(inputs), y, reduction="none")
            base = torch.nn.functional.cross_entropy(clf(x), y, reduction="none")
        adv = kinds > 0
        if not bool((loss[adv] > base[adv]).all()):
            raise fail(f"{what}: on {int((loss[adv] <= base[adv]).sum())} perturbed rows the classifier's loss did not "
                       f"rise: attack the classifier with the row's own label y (an untargeted attack)")
    return "balanced_batch has the paper's balance, clean targets and each setting's budget"
