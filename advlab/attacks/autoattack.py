"""AutoAttack: a parameter-free ensemble of complementary attacks, run as a cascade.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020.
"""
from __future__ import annotations

import time

import torch

from advlab.attacks.apgd import APGD, APGDT, sub_generator
from advlab.attacks.base import Attack, check_positive
from advlab.attacks.fab import FAB
from advlab.attacks.square import Square


class AutoAttack(Attack):
    """AutoAttack (Croce & Hein 2020), Linf or L2 ball of radius eps; y = true labels.

    version "standard" (deterministic models): APGD-CE, APGD-T (targeted DLR), FAB-T and Square
    (n_queries); version "rand" (randomised defenses): APGD-CE and APGD-DLR with eot_iter=20.
    Each attack runs only on the points that all previous ones left correctly classified, so the
    result is, per example, the first successful adversarial point (the pointwise worst case); the
    components are seeded with `seed` as if each ran alone. Target classes: min(9, n_classes - 1).
    After a call `last_report` holds the cascade (robust accuracy and count after each attack);
    verbose=True prints it.
    """

    randomized = True

    def __init__(self, eps: float, norm: str = "linf", version: str = "standard", n_classes: int = 10,
                 steps: int = 100, n_queries: int = 5000, verbose: bool = False, **common):
        super().__init__(eps, norm, False, **common)
        if version not in ("standard", "rand"):
            raise ValueError(f"version: must be 'standard' or 'rand', got {version!r}")
        self.version = version
        self.n_classes = check_positive(n_classes, "n_classes", integer=True, minimum=1)
        self.steps = check_positive(steps, "steps", integer=True)
        self.n_queries = check_positive(n_queries, "n_queries", integer=True)
        if not isinstance(verbose, bool):
            raise ValueError(f"verbose: must be a bool, got {verbose!r}")
        self.verbose = verbose
        self.eot_iter = 20 if version == "rand" else 1
        eps = self.eps  # components share the threat model (eps=None: the default, resolved once here)
        kw = dict(seed=self.seed, chunk_size=self.chunk_size, checks=False, amp=self.amp)
        n_t = min(9, self.n_classes - 1)
        if version == "standard":
            self.attacks = {
                "apgd-ce": APGD(eps, norm, steps=steps, n_restarts=1, loss="ce", **kw),
                "apgd-t": APGDT(eps, norm, steps=steps, n_restarts=1, n_target_classes=n_t, **kw),
                "fab-t": FAB(eps, norm, steps=steps, n_restarts=1, multi_targeted=True, n_target_classes=n_t, **kw),
                "square": Square(eps, norm, n_queries=n_queries, n_restarts=1, p_init=0.8, loss="margin", **kw),
            }
        else:
            self.attacks = {
                "apgd-ce": APGD(eps, norm, steps=steps, n_restarts=1, loss="ce", eot_iter=20, **kw),
                "apgd-dlr": APGD(eps, norm, steps=steps, n_restarts=1, loss="dlr", eot_iter=20, **kw),
            }
        self.last_report: dict | None = None

    def __call__(self, model, x, y):
        # one generator per component, persisting across chunks, as in a stand-alone run
        self._gens = {k: torch.Generator().manual_seed(a.seed) for k, a in self.attacks.items()}
        self._tally = {"n": 0, "clean": 0, **{k: 0 for k in self.attacks}}
        self._secs = {k: 0.0 for k in self.attacks}
        for a in self.attacks.values():
            a._queries = []
        out = super().__call__(model, x, y)
        n = self._tally["n"]
        acc = (lambda k: self._tally[k] / n if n else float("nan"))  # noqa: E731
        cascade = [{"attack": "clean", "settings": "", "robust_acc": acc("clean"), "n_robust": self._tally["clean"],
                    "seconds": 0.0}]
        cascade += [{"attack": k, "settings": repr(a), "robust_acc": acc(k), "n_robust": self._tally[k],
                     "seconds": round(self._secs[k], 2)} for k, a in self.attacks.items()]
        self.last_report = {"attack": repr(self), "n": n, "clean_acc": acc("clean"),
                            "robust_acc": cascade[-1]["robust_acc"], "cascade": cascade}
        if self.verbose:
            print(f"{self!r} on {n} examples")
            for row in cascade:
                print(f"  after {row['attack']:<8s} robust accuracy {100 * row['robust_acc']:6.2f}% "
                      f"({row['n_robust']}/{n})" + (f", {row['seconds']:.1f} s" if row["attack"] != "clean" else ""))
        return out

    @staticmethod
    def _predict(model, x):
        with torch.no_grad():
            return model(x).argmax(1)

    def _attack(self, model, x, y, generator):
        if not hasattr(self, "_gens"):  # called directly, not through __call__
            self._gens = {k: torch.Generator().manual_seed(a.seed) for k, a in self.attacks.items()}
            self._tally = {"n": 0, "clean": 0, **{k: 0 for k in self.attacks}}
            self._secs = {k: 0.0 for k in self.attacks}
        robust = self._predict(model, x) == y
        x_adv = x.clone()
        self._tally["n"] += len(x)
        self._tally["clean"] += int(robust.sum())
        for name, atk in self.attacks.items():
            t0 = time.perf_counter()
            idx = robust.nonzero().squeeze(1)
            if len(idx) == 0:
                sub_generator(self._gens[name])  # consume this chunk's draw, as a stand-alone run would
            else:
                xa = atk._finalize(atk._attack(model, x, y, self._gens[name], active=robust).detach(), x)
                fooled = self._predict(model, xa[idx]) != y[idx]
                x_adv[idx[fooled]] = xa[idx[fooled]]
                robust[idx[fooled]] = False
            self._tally[name] += int(robust.sum())
            self._secs[name] += time.perf_counter() - t0
        return x_adv
