"""Auto-PGD: APGD (CE / DLR loss) and AutoAttack's targeted APGD-T.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020. PGD with momentum whose step size starts at 2*eps and is halved
per example at checkpoints where the attack stalls; every restart starts from the best point.
"""
from __future__ import annotations

import math

import torch

from advlab.attacks.base import (LOSSES, Attack, check_positive, dlr_loss_targeted, input_grad, project,
                                 random_in_ball, steepest_step)


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations w_j = ceil(p_j * steps) at which APGD may halve a step size.

    p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) while p <= 1 (computed in
    exact integer hundredths, so e.g. steps=100 gives [0, 22, 41, 57, 70, 80, 87, 93, 99]).
    """
    p = [0, 22]
    while p[-1] + max(p[-1] - p[-2] - 3, 6) <= 100:
        p.append(p[-1] + max(p[-1] - p[-2] - 3, 6))
    return sorted({-(-pj * steps // 100) for pj in p})


def sub_generator(generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for one chunk, seeded by a single draw from the call's generator.

    Each chunk consumes exactly one number of the call's stream, whatever happens inside it, so an
    attack run on a subset of a chunk (as AutoAttack does) sees the same per-example draws as the
    attack run alone on the whole chunk.
    """
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


class _FoundCount:
    """How many examples are found, for the decision to drop them from the batch: read at once on
    the CPU (free there), one step late on CUDA (a non-blocking copy into pinned memory, waited
    for only after the next step is queued), so the GPU never idles on a host sync per step. Only
    *when* rows are dropped can differ; dropped rows keep their first success either way."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.bufs = [torch.zeros((), dtype=torch.long, pin_memory=True) for _ in range(2)]
            self.events = [torch.cuda.Event(), torch.cuda.Event()]
        self.turn, self.pending = 0, False

    def __call__(self, found: torch.Tensor) -> int:
        if not self.cuda:
            return int(found.sum())
        i, self.turn = self.turn, 1 - self.turn
        self.bufs[i].copy_(found.sum(), non_blocking=True)
        self.events[i].record(torch.cuda.current_stream(found.device))
        if not self.pending:  # nothing issued before: count nothing this step
            self.pending = True
            return 0
        self.events[1 - i].synchronize()
        return int(self.bufs[1 - i])

    def reset(self) -> None:
        """After rows were dropped, the count in flight refers to the old batch: forget it."""
        self.pending = False


@torch.no_grad()
def still_robust(model, x: torch.Tensor, y: torch.Tensor, active: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean logits (N, K) in float32, mask (N,) of the points left to attack): those the model
    still classifies correctly and, when `active` is given, that the caller marked active."""
    logits = model(x).float()
    todo = logits.argmax(1) == y
    return logits, todo & active if active is not None else todo


def apgd_run(model, x, x0, aux, loss_fn, success_fn, eps, norm, steps, rho=0.75, eot_iter=1, amp=False,
             early_stop=None):
    """One APGD run from x0 on a batch; every quantity is per example.

    loss_fn(logits, aux) -> loss to maximise, success_fn(logits, aux) -> bool.
    Returns (x_out, loss_out, success): x_out is a successful iterate where one was found, else the
    highest-loss iterate (the start included, so loss_out >= the loss at x0). early_stop (default:
    eot_iter == 1) stops attacking an example at its first successful iterate and returns that one;
    otherwise it keeps going and returns the highest-loss successful iterate (what a noisy,
    randomised model needs, where one lucky pass proves little).
    """
    early_stop = eot_iter == 1 if early_stop is None else early_stop
    view = (-1,) + (1,) * (x.dim() - 1)

    def proj(v, xo):
        return (xo + project(v - xo, eps, norm)).clamp(0.0, 1.0)

    checkpoints = set(apgd_checkpoints(steps)) - {0}
    n, dev = len(x), x.device
    out_x, out_loss = x0.clone(), torch.zeros(n, device=dev)
    out_found = torch.zeros(n, dtype=torch.bool, device=dev)
    xk = proj(x0, x)
    g, loss, logits = input_grad(model, xk, aux, loss_fn, eot_iter, amp)
    found = success_fn(logits, aux)
    # per-example state of the examples still under attack; the rows of `pos` index the batch
    st = dict(pos=torch.arange(n, device=dev), x=x, aux=aux, xk=xk, x_prev=xk, g=g, prev_loss=loss,
              found=found, x_found=xk.clone(), loss_found=torch.where(found, loss, torch.full_like(loss, -math.inf)),
              best_loss=loss.clone(), x_max=xk.clone(), g_max=g.clone(), best_at_w=loss.clone(),
              eta=torch.full((n,), 2.0 * eps, device=dev, dtype=x.dtype), n_up=torch.zeros(n, device=dev),
              reduced_last=torch.zeros(n, dtype=torch.bool, device=dev))

    def retire(st, rows):
        """Write the results of `rows` (bool over the state) to the outputs."""
        p = st["pos"][rows]
        f = st["found"][rows]
        out_x[p] = torch.where(f.view(view), st["x_found"][rows], st["x_max"][rows])
        out_loss[p] = torch.where(f, st["loss_found"][rows], st["best_loss"][rows])
        out_found[p] = f

    last_w = 0
    count = _FoundCount(dev) if early_stop else None
    for k in range(steps + 1):
        n_found = count(st["found"]) if early_stop else 0
        if n_found and 10 * n_found >= len(st["pos"]):  # drop finished examples once worth the copies
            retire(st, st["found"])
            st = {key: v[~st["found"]] for key, v in st.items()}
            count.reset()
            if len(st["pos"]) == 0:
                break
        if k == steps:
            break
        xo, xk, g, eta = st["x"], st["xk"], st["g"], st["eta"]
        a = 1.0 if k == 0 else 0.75  # momentum: no previous step before the first one
        z = proj(xk + eta.view(view) * steepest_step(g, norm), xo)
        x_new = proj(xk + a * (z - xk) + (1 - a) * (xk - st["x_prev"]), xo)
        g, loss, logits = input_grad(model, x_new, st["aux"], loss_fn, eot_iter, amp)
        succ = success_fn(logits, st["aux"])
        # early_stop: the first success is final (so results do not depend on when rows are dropped)
        upd = succ & (~st["found"] if early_stop else loss > st["loss_found"])
        st["x_found"] = torch.where(upd.view(view), x_new, st["x_found"])
        st["loss_found"] = torch.where(upd, loss, st["loss_found"])
        st["found"] = st["found"] | succ
        st["n_up"] = st["n_up"] + (loss > st["prev_loss"])
        imp = loss > st["best_loss"]
        st["best_loss"] = torch.where(imp, loss, st["best_loss"])
        st["x_max"] = torch.where(imp.view(view), x_new, st["x_max"])
        st["g_max"] = torch.where(imp.view(view), g, st["g_max"])
        st["x_prev"], st["xk"], st["g"], st["prev_loss"] = xk, x_new, g, loss
        if k + 1 in checkpoints:
            cond1 = st["n_up"] < rho * (k + 1 - last_w)                   # too few loss increases
            cond2 = ~st["reduced_last"] & (st["best_loss"] <= st["best_at_w"])  # same step, no progress
            red = cond1 | cond2
            rv = red.view(view)
            st["eta"] = torch.where(red, eta / 2, eta)
            for key, best in (("xk", "x_max"), ("x_prev", "x_max"), ("g", "g_max")):  # restart from the best point
                st[key] = torch.where(rv, st[best], st[key])
            st["prev_loss"] = torch.where(red, st["best_loss"], st["prev_loss"])
            st["reduced_last"], st["best_at_w"], last_w = red, st["best_loss"].clone(), k + 1
            st["n_up"] = torch.zeros_like(st["n_up"])
    if len(st["pos"]):
        retire(st, torch.ones(len(st["pos"]), dtype=torch.bool, device=dev))
    return out_x, out_loss, out_found


def apgd_restarts(atk, model, x, aux, generator, loss_fn, success_fn, todo):
    """atk.n_restarts APGD runs, each only on the examples of `todo` not yet successful.

    Returns (x_adv, success) for the whole chunk; unattacked rows of x_adv are x itself.
    """
    x_adv = x.clone()
    best = torch.full((len(x),), float("-inf"), device=x.device)
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(atk.n_restarts):
        idx = (todo & ~done).nonzero().squeeze(1)
        if len(idx) == 0:
            break
        noise = random_in_ball(x, atk.eps, atk.norm, generator)  # whole chunk: draws independent of idx
        xa, la, ok = apgd_run(model, x[idx], x[idx] + noise[idx], aux[idx], loss_fn, success_fn, atk.eps,
                              atk.norm, atk.steps, atk.rho, atk.eot_iter, atk.amp)
        keep = ok | (la > best[idx])
        x_adv[idx[keep]] = xa[keep]
        best[idx[keep]] = la[keep]
        done[idx[ok]] = True
    return x_adv, done


def _targeted_dlr(z, a):
    return dlr_loss_targeted(z, a[:, 0], a[:, 1])


def _targeted_dlr_few_classes(z, a):
    """Targeted DLR for 2 or 3 classes, where z_pi3 / z_pi4 do not exist (2 classes: the plain
    logit gap, as any normalisation by logit differences would make it constant)."""
    z = z.float()
    gap = z.gather(1, a[:, 1:2]).squeeze(1) - z.gather(1, a[:, :1]).squeeze(1)
    return gap if z.shape[1] == 2 else gap / (z.amax(1) - z.amin(1) + 1e-12)


def _check_rho(rho) -> float:
    check_positive(rho, "rho")
    if rho > 1:
        raise ValueError(f"rho: must be in (0, 1], got {rho!r}")
    return float(rho)


class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020), white box, Linf or L2 ball of radius eps.

    Step size 2*eps, halved per example at checkpoints w_j (see `apgd_checkpoints`) when fewer than
    rho of the steps since the last checkpoint increased the loss, or when neither the step size
    nor the best loss changed; momentum 0.75. loss "ce" or "dlr" (scale-invariant Difference of
    Logits Ratio). Each of n_restarts random starts attacks only the points still correctly
    classified, from a uniform random point of the ball. Returns, per example, a misclassified
    iterate when one was found (with eot_iter=1 the first one: the example is then left alone),
    else the highest-loss iterate. targeted=True: y holds target classes and the loss of the
    target is descended (-CE, or -DLR of the target). eot_iter > 1 averages gradients and losses
    over that many passes (randomised defenses). DLR needs at least 3 classes.
    """

    randomized = True

    def __init__(self, eps: float, norm: str = "linf", steps: int = 100, n_restarts: int = 1, loss: str = "ce",
                 rho: float = 0.75, eot_iter: int = 1, targeted: bool = False, **common):
        super().__init__(eps, norm, targeted, **common)
        self.steps = check_positive(steps, "steps", integer=True)
        self.n_restarts = check_positive(n_restarts, "n_restarts", integer=True)
        if loss not in ("ce", "dlr"):
            raise ValueError(f"loss: must be 'ce' or 'dlr', got {loss!r}")
        self.loss = loss
        self.rho = _check_rho(rho)
        self.eot_iter = check_positive(eot_iter, "eot_iter", integer=True)

    def _objective(self):
        base = LOSSES[self.loss]
        if self.targeted:
            return (lambda z, t: -base(z, t)), (lambda z, t: z.argmax(1) == t)
        return base, (lambda z, y: z.argmax(1) != y)

    def _attack(self, model, x, y, generator, active=None):
        loss_fn, success_fn = self._objective()
        with torch.no_grad():
            logits = model(x).float()
        if self.loss == "dlr" and logits.shape[1] < 3:
            raise ValueError(f"loss: 'dlr' needs a model with at least 3 classes, this one has {logits.shape[1]}")
        todo = ~success_fn(logits, y)
        if active is not None:
            todo &= active
        x_adv, _ = apgd_restarts(self, model, x, y, sub_generator(generator), loss_fn, success_fn, todo)
        return x_adv


class APGDT(Attack):
    """AutoAttack's APGD-T (Croce & Hein 2020), white box, Linf or L2; y holds the TRUE labels.

    For k = 2 .. n_target_classes + 1, target the class with the k-th largest clean logit and run
    APGD with the targeted DLR loss -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) on the points still
    correctly classified (3 classes: -(z_y - z_t) / (z_pi1 - z_pi3); 2 classes: z_t - z_y).
    Returns the first misclassified point found per example, else x.
    """

    randomized = True

    def __init__(self, eps: float, norm: str = "linf", steps: int = 100, n_restarts: int = 1,
                 n_target_classes: int = 9, rho: float = 0.75, eot_iter: int = 1, **common):
        super().__init__(eps, norm, False, **common)
        self.steps = check_positive(steps, "steps", integer=True)
        self.n_restarts = check_positive(n_restarts, "n_restarts", integer=True)
        self.n_target_classes = check_positive(n_target_classes, "n_target_classes", integer=True)
        self.rho = _check_rho(rho)
        self.eot_iter = check_positive(eot_iter, "eot_iter", integer=True)

    def _attack(self, model, x, y, generator, active=None):
        gen = sub_generator(generator)
        logits, todo = still_robust(model, x, y, active)
        order = logits.argsort(1, descending=True)
        x_adv = x.clone()
        loss_fn = _targeted_dlr if logits.shape[1] >= 4 else _targeted_dlr_few_classes
        success_fn = lambda z, a: z.argmax(1) != a[:, 0]  # noqa: E731
        for k in range(1, min(self.n_target_classes, logits.shape[1] - 1) + 1):
            if not bool(todo.any()):
                break
            aux = torch.stack([y, order[:, k]], 1)
            xa, ok = apgd_restarts(self, model, x, aux, gen, loss_fn, success_fn, todo)
            x_adv[ok] = xa[ok]
            todo &= ~ok
        return x_adv
