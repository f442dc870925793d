"""Checks for exercise set 02: stronger attacks (the DLR loss, the C&W objective, robust accuracy
from minimal perturbation norms, the transfer table).

DLR is the loss of Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks"; the objective f is that of Carlini & Wagner, "Towards Evaluating
the Robustness of Neural Networks". The logit cases put the true class at every rank and include
a 5-class batch, so a max that includes the true class, a wrong sorted index or a hard-coded
number of classes all show; DLR is also checked for scale invariance. Robust accuracy uses norms
exactly on the ε grid (robust means norm > ε, not ≥) and failed attacks with small norms. The
transfer table runs a counting FGSM on three tiny classifiers, which tells a transposed table,
clean accuracies and white-box-everywhere apart, and notices redundant attack calls.
"""
from __future__ import annotations

import math

import torch

from .framework import _matches, assert_close, assert_tensor, call_student, fail, fixed_images, register


def _as_float_tensor(out, what: str, n: int) -> torch.Tensor:
    """A student's list / numpy array / tensor of n numbers as a float tensor of shape (n,)."""
    if isinstance(out, torch.Tensor):
        t = out.detach()
    else:
        try:
            import numpy as np
            t = torch.as_tensor(np.asarray(out, dtype=np.float64))
        except (TypeError, ValueError):
            raise fail(f"{what} returned a {type(out).__name__}; expected {n} numbers (a tensor or a list)") from None
    if t.dim() == 0 or t.numel() != n or (t.dim() > 1 and max(t.shape) != n):
        raise fail(f"{what} returned shape {tuple(t.shape)}; expected {n} numbers, one per ε of eps_grid")
    return t.flatten().double()


def _logit_cases():
    """(logits, y) batches with a known structure: correct and misclassified examples, the true
    class at every rank, 10 classes and 5 classes (so nothing may assume 10)."""
    g = torch.Generator().manual_seed(20)
    z = torch.randn((10, 10), generator=g) * 3
    y = torch.randint(0, 10, (10,), generator=g)
    order = z.argsort(1, descending=True)
    for i, rank in enumerate([0, 0, 1, 2, 9, 0, 3, 1, 5, 2]):   # rank of the true class among the logits
        y[i] = order[i, rank]
    z5 = torch.randn((6, 5), generator=g) * 2 + 1.0
    o5 = z5.argsort(1, descending=True)
    y5 = torch.stack([o5[i, r] for i, r in enumerate([0, 1, 2, 4, 0, 3])])
    return [(z, y), (z5, y5)]


def _other_max(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return z.scatter(1, y[:, None], float("-inf")).amax(1)


def _z_y(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return z.gather(1, y[:, None]).squeeze(1)


def _reference_dlr(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    s = z.sort(1, descending=True).values
    return -(_z_y(z, y) - _other_max(z, y)) / (s[:, 0] - s[:, 2] + 1e-12)


@register
def check_dlr_loss(student) -> str:
    """Exercise 02.1: dlr_loss(logits, y) -> (N,) tensor, the Difference of Logits Ratio
    -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3) per example (z_pi1 >= z_pi2 >= ... the sorted logits)."""
    what = "your dlr_loss"
    for z, y in _logit_cases():
        n, k = z.shape
        out = call_student(student, z, y, what=what)
        assert_tensor(out, what, shape=(n,))
        ref = _reference_dlr(z, y)
        if _matches(out, ref):
            continue
        s = z.sort(1, descending=True).values
        z_y, other = _z_y(z, y), _other_max(z, y)
        num = -(z_y - other)
        if _matches(out, -ref):
            raise fail(f"{what} has the sign flipped: DLR must be large (positive) when the example is "
                       f"misclassified, so the numerator is -(z_y - max_{{j≠y}} z_j) = max_{{j≠y}} z_j - z_y")
        if _matches(out, -(z_y - z.amax(1)) / (s[:, 0] - s[:, 2] + 1e-12)):
            raise fail(f"{what}: your max runs over all classes, the true class included, so the numerator is 0 "
                       f"for every correctly classified example; take the max over j ≠ y only (e.g. set "
                       f"logit y to -inf first: logits.scatter(1, y[:, None], float('-inf')))")
        if _matches(out, num):
            raise fail(f"{what} has no denominator: that is the margin loss, and it is not scale-invariant "
                       f"(multiply the logits by 10 and it grows 10×); divide by z_π1 - z_π3")
        for den, msg in (
                (s[:, 0] - s[:, 1], "z_π1 - z_π2 (the second largest logit); use the third largest, z_π3"),
                (z_y - s[:, 2], "z_y - z_π3; the denominator uses the largest logit z_π1 whichever class it "
                                "is (it differs from z_y on misclassified examples)"),
                (s[:, 0] - s[:, -1], "z_π1 minus the smallest logit; use the third largest, z_π3"),
                (z.sort(1).values[:, -1] - z.sort(1).values[:, 2],
                 "a third-SMALLEST logit: sort in descending order (z.sort(1, descending=True))"),
                (z.sort(1).values[:, 0] - z.sort(1).values[:, 2],
                 "the sorted logits in ascending order: sort in descending order (z.sort(1, descending=True))"),
                (s[:, 0] - s[:, 3], "z_π1 - z_π4: π3 is index 2 of the descending sort (indices start at 0)")):
            if _matches(out, num / (den + 1e-12)) or _matches(out, num / den):
                raise fail(f"{what}: wrong denominator, you divide by {msg}")
        p = z.softmax(1)
        if _matches(out, _reference_dlr(p, y)):
            raise fail(f"{what} works on probabilities (softmax); DLR is defined on the logits themselves")
        scaled = call_student(student, 10 * z, y, what=what)
        if isinstance(scaled, torch.Tensor) and scaled.shape == out.shape and not _matches(scaled, out):
            raise fail(f"{what} is not scale-invariant: multiplying every logit by 10 changes it (example 0: "
                       f"{out[0].item():.4g} → {scaled[0].item():.4g}); numerator and denominator must both "
                       f"be differences of logits")
        if k != 10:
            raise fail(f"{what} is right with 10 classes but wrong with {k}: don't hard-code the number of classes")
        assert_close(out, ref, what, atol=1e-4)
    z, y = _logit_cases()[0]
    d = _reference_dlr(z, y)
    return (f"dlr_loss: right on 16 examples (10 and 5 classes, true class at every rank), positive exactly "
            f"where misclassified ({int((d > 0).sum())} of 10 here), and unchanged when the logits are scaled")


def _reference_cw(z, y, kappa=0.0, targeted=False):
    m = _other_max(z, y) - _z_y(z, y) if targeted else _z_y(z, y) - _other_max(z, y)
    return m.clamp(min=-kappa)


@register
def check_cw_objective(student) -> str:
    """Exercise 02.2: cw_objective(logits, y, kappa=0.0, targeted=False) -> (N,) tensor, Carlini &
    Wagner's f: untargeted max(z_y - max_{j != y} z_j, -kappa); targeted (y = target classes)
    max(max_{j != y} z_j - z_y, -kappa)."""
    what = "your cw_objective"
    (z, y), (z5, y5) = _logit_cases()
    cases = [(z, y, 0.0, False), (z, y, 2.0, False), (z5, y5, 1.0, False), (z, y, 0.0, True), (z, y, 2.0, True),
             (z5, y5, 1.0, True)]
    for z, y, kappa, targeted in cases:
        n = len(z)
        out = call_student(student, z, y, kappa=kappa, targeted=targeted, what=what)
        assert_tensor(out, what, shape=(n,))
        ref = _reference_cw(z, y, kappa, targeted)
        if _matches(out, ref):
            continue
        setting = f"kappa={kappa:g}, targeted={targeted}"
        m = _reference_cw(z, y, math.inf, targeted)        # the unclamped margin
        if _matches(out, _reference_cw(z, y, kappa, not targeted)):
            if targeted:
                raise fail(f"{what} ({setting}) ignores targeted=True: then y holds the TARGET class and f = "
                           f"max(max_{{j≠t}} z_j - z_t, -κ), small once the target's logit is the largest")
            raise fail(f"{what} ({setting}) has the sign flipped: untargeted f = max(z_y - max_{{j≠y}} z_j, -κ) "
                       f"is positive while the example is still correctly classified")
        if _matches(out, m):
            raise fail(f"{what} ({setting}) has no clamp at -κ: f = max(margin, -κ) stops rewarding the attack "
                       f"once the margin reaches κ, so the distance term takes over; without it the attack keeps "
                       f"pushing past the boundary")
        if _matches(out, m.clamp(min=kappa)):
            raise fail(f"{what} ({setting}) clamps at +κ; the floor is -κ: max(margin, -kappa)")
        if _matches(out, m.clamp(max=-kappa)):
            raise fail(f"{what} ({setting}) takes min(margin, -κ); f is max(margin, -κ)")
        if _matches(out, ref + kappa):
            raise fail(f"{what} ({setting}) returns max(margin + κ, 0) = f + κ; the course (and advlab.attacks.CW) "
                       f"uses f = max(margin, -κ)")
        if kappa and _matches(out, _reference_cw(z, y, 0.0, targeted)):
            raise fail(f"{what} ({setting}) ignores kappa: f = max(margin, -kappa)")
        z_all = z.amax(1)
        wrong_max = (_z_y(z, y) - z_all) if not targeted else (z_all - _z_y(z, y))
        if _matches(out, wrong_max.clamp(min=-kappa)):
            raise fail(f"{what} ({setting}): your max runs over all classes, the class y included; take "
                       f"max_{{j≠y}} z_j (set logit y to -inf first)")
        if _matches(out, _reference_cw(z.softmax(1), y, kappa, targeted)):
            raise fail(f"{what} ({setting}) works on probabilities; C&W's f uses the logits Z (softmax "
                       f"outputs saturate and hide the gradient)")
        assert_close(out, ref, f"{what} ({setting})")
    return ("cw_objective: right for untargeted and targeted attacks with κ = 0, 1, 2 on 10- and 5-class logits: "
            "positive before success, floored at -κ after it")


def _norms_cases():
    """(norms, success, eps_grid): norms exactly on grid points, failures with small norms, and
    misclassified-at-clean examples (norm 0, success)."""
    norms = torch.tensor([0.0, 0.3, 0.5, 0.5, 1.0, 1.2, 2.0, 0.2, 0.4, 3.5, 0.0, 1.7])
    success = torch.tensor([True, True, True, True, True, True, True, False, False, True, False, True])
    grid = [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0]
    g = torch.Generator().manual_seed(21)
    n2 = torch.rand(37, generator=g) * 3
    s2 = torch.rand(37, generator=g) > 0.2
    grid2 = torch.linspace(0, 3, 13)
    return [(norms, success, grid), (n2, s2, grid2)]


def _reference_robust_acc(norms, success, grid) -> torch.Tensor:
    return torch.tensor([float(((~success) | (norms > float(e))).double().mean()) for e in grid], dtype=torch.float64)


@register
def check_robust_acc_from_norms(student) -> str:
    """Exercise 02.3: robust_acc_from_norms(norms, success, eps_grid) -> one robust accuracy (a fraction)
    per eps of eps_grid: an example is robust at eps unless the attack succeeded with norm <= eps."""
    what = "your robust_acc_from_norms"
    for norms, success, grid in _norms_cases():
        out = call_student(student, norms, success, grid, what=what)
        out = _as_float_tensor(out, what, len(grid))
        ref = _reference_robust_acc(norms, success, grid)
        if _matches(out, ref):
            continue
        n = len(norms)
        ge = torch.tensor([float(((~success) | (norms >= float(e))).double().mean()) for e in grid], dtype=torch.float64)
        if _matches(out, ge):
            raise fail(f"{what}: an example whose perturbation has norm exactly ε is NOT robust at ε (the "
                       f"perturbation lies in the closed ball ‖δ‖ ≤ ε): robust means norm > ε, not ≥ ε")
        no_success = torch.tensor([float((norms > float(e)).double().mean()) for e in grid], dtype=torch.float64)
        if _matches(out, no_success):
            raise fail(f"{what} ignores `success`: where the attack failed, the example is robust at every ε, "
                       f"whatever norm the attack's last iterate had")
        inverted = torch.tensor([float(((~success) | (norms <= float(e))).double().mean()) for e in grid],
                                dtype=torch.float64)
        inverted2 = torch.tensor([float((success & (norms <= float(e))).double().mean()) for e in grid],
                                 dtype=torch.float64)
        if _matches(out, inverted) or _matches(out, 1 - ref) or _matches(out, inverted2):
            raise fail(f"{what} is the wrong way round: it should DEcrease with ε. An example is broken at ε "
                       f"when the attack succeeded with a perturbation of norm ≤ ε; robust otherwise (you may be "
                       f"returning the attack success rate)")
        if _matches(out, ref * n):
            raise fail(f"{what} returns counts of robust examples; return fractions in [0, 1] (divide by N)")
        if _matches(out, ref * 100):
            raise fail(f"{what} returns percentages; return fractions in [0, 1]")
        if bool((out[1:] > out[:-1] + 1e-9).any()):
            raise fail(f"{what} increases with ε somewhere (ε = {[float(e) for e in grid]}, you return "
                       f"{[round(float(v), 4) for v in out]}): a larger budget can only break more examples")
        i = int((~torch.isclose(out, ref, atol=1e-6)).nonzero()[0])
        raise fail(f"{what} is wrong at ε = {float(grid[i]):g}: got {float(out[i]):.4g}, expected {float(ref[i]):.4g} "
                   f"(robust at ε: not success, or norm > ε)")
    norms, success, grid = _norms_cases()[0]
    ref = _reference_robust_acc(norms, success, grid)
    return (f"robust_acc_from_norms: right on {len(norms)} + 37 examples, norms exactly on the grid included; "
            f"at ε = 0 it gives the clean accuracy ({float(ref[0]):.3f} here) and it never increases with ε")


def _tiny_zoo():
    """Three tiny deterministic classifiers of 1x8x8 images, images and labels for the transfer check."""
    import torch.nn as nn
    g = torch.Generator().manual_seed(22)
    nets = {}
    for name, hidden in (("a", 16), ("b", 24), ("c", 0)):
        layers = [nn.Flatten()] + ([nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 4)] if hidden
                                   else [nn.Linear(64, 4)])
        net = nn.Sequential(*layers)
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.6 if p.dim() > 1 else 0.1))
        nets[name] = net.eval()
    x = fixed_images(40, shape=(1, 8, 8), seed=23)
    with torch.no_grad():
        y = sum(net(x).softmax(1) for net in nets.values()).argmax(1)
    return nets, x, y


class _CountingAttack:
    """FGSM (L∞, eps 0.15) that counts its calls and remembers which models it attacked."""

    def __init__(self):
        from advlab.attacks import FGSM
        self.inner = FGSM(eps=0.15, checks=False)
        self.calls = []

    def __call__(self, model, x, y):
        self.calls.append(model)
        return self.inner(model, x, y)

    def __repr__(self):
        return repr(self.inner)


def _reference_transfer(models: dict, attack, x, y) -> torch.Tensor:
    from advlab.metrics import accuracy
    names = list(models)
    table = torch.zeros(len(names), len(names), dtype=torch.float64)
    for i, s in enumerate(names):
        x_adv = attack(models[s], x, y)
        for j, t in enumerate(names):
            table[i, j] = accuracy(models[t], x_adv, y)
    return table


@register
def check_transfer_table(student) -> str:
    """Exercise 02.4: transfer_table(models, attack, x, y) -> (S, S) table (tensor or nested list) whose
    entry [i, j] is the accuracy of target model j on attack(source model i, x, y); models is a dict
    name -> model and rows/columns follow its order."""
    what = "your transfer_table"
    from advlab.metrics import accuracy
    nets, x, y = _tiny_zoo()
    names = list(nets)
    atk = _CountingAttack()
    ref = _reference_transfer(nets, _CountingAttack(), x, y)
    out = call_student(student, nets, atk, x, y, what=what)
    if isinstance(out, dict):
        raise fail(f"{what} returned a dict; return an S×S table (a tensor or a list of rows), row i = source "
                   f"model i, column j = target model j")
    try:
        import numpy as np
        t = torch.as_tensor(np.asarray(out.detach() if isinstance(out, torch.Tensor) else out, dtype=np.float64))
    except (TypeError, ValueError):
        raise fail(f"{what} returned a {type(out).__name__}; expected an S×S table of accuracies") from None
    if tuple(t.shape) != (len(names), len(names)):
        raise fail(f"{what} returned shape {tuple(t.shape)}; expected ({len(names)}, {len(names)}): one row per "
                   f"source model, one column per target model")
    if not atk.calls:
        raise fail(f"{what} never called `attack`: craft x_adv = attack(source_model, x, y) for each source")
    if not _matches(t, ref):
        clean = torch.tensor([accuracy(nets[n], x, y) for n in names], dtype=torch.float64)
        if _matches(t, ref.T):
            raise fail(f"{what} is transposed: row i must be the SOURCE (the substitute the attack was crafted "
                       f"on), column j the TARGET it is evaluated on")
        if _matches(t, clean.expand(len(names), -1)) or _matches(t, clean[:, None].expand(-1, len(names))):
            raise fail(f"{what} holds clean accuracies: evaluate the targets on the adversarial images x_adv")
        if _matches(t, ref.diagonal()[None].expand(len(names), -1)):
            raise fail(f"{what} attacks the target model itself in every entry (white-box everywhere): craft "
                       f"x_adv on the source model of the row, then evaluate every target on it")
        if _matches(t, ref * len(x)) or _matches(t, ref * 100):
            raise fail(f"{what} returns counts or percentages; return accuracies as fractions in [0, 1]")
        i, j = [int(v) for v in (~torch.isclose(t, ref, atol=1e-6)).nonzero()[0]]
        raise fail(f"{what}[{i}, {j}] (source {names[i]!r} → target {names[j]!r}) is {float(t[i, j]):.4g}, "
                   f"expected {float(ref[i, j]):.4g}")
    note = ""
    if len(atk.calls) > len(names):
        note = (f" — but you crafted adversarial images {len(atk.calls)} times; once per source ({len(names)}) is "
                f"enough: craft x_adv outside the loop over targets")
    return (f"transfer_table: right on 3 tiny models (rows = source, columns = target, white-box diagonal)" + note)
