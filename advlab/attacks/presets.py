"""The standard attack settings of the course, defined once.

Every robust accuracy in the course, the zoo records and the reports comes from one of these, so
each setting is written here and nowhere else; `repr()` of the returned attack is what the records
store. eps=None takes the Fashion-MNIST threat model (`advlab.data.threat_model("fashion_mnist")`:
Linf 0.1, L2 1.5); every function passes the options every attack shares (seed, chunk_size,
checks, amp) on to the attack.

    from advlab.attacks import presets
    atk = presets.pgd40()              # PGD(eps=0.1, alpha=0.01, steps=40, random_start=True)
    atk = presets.autoattack(8 / 255)  # AutoAttack "standard" at eps 8/255

References:
  Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018,
    https://arxiv.org/abs/1706.06083
  Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015,
    https://arxiv.org/abs/1412.6572
  Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020, https://arxiv.org/abs/2003.01690
  Andriushchenko et al., "Square Attack: a query-efficient black-box adversarial attack via random
    search", ECCV 2020, https://arxiv.org/abs/1912.00049
  Lee & Kim, "Robust Evaluation of Diffusion-Based Adversarial Purification", ICCV 2023,
    https://arxiv.org/abs/2303.09051
"""
from __future__ import annotations

from advlab.attacks.apgd import APGD
from advlab.attacks.autoattack import AutoAttack
from advlab.attacks.base import default_eps
from advlab.attacks.fgsm import FGSM
from advlab.attacks.pgd import PGD
from advlab.attacks.square import Square

# Lee & Kim's PGD-EoT step: 0.007 at eps 8/255 (CIFAR-10), scaled linearly with eps
PGD_EOT_STEP, PGD_EOT_EPS = 0.007, 8 / 255


def _eps(eps, norm: str = "linf") -> float:
    return default_eps(norm) if eps is None else eps


def pgd(eps: float | None = None, steps: int = 40, alpha: float | None = None, **common) -> PGD:
    """The course's PGD: Linf, random start, `steps` steps of alpha (default eps / 10, i.e. 0.01 at
    eps 0.1), cross-entropy, last iterate (Madry et al. 2018). `advlab evaluate` and
    `advlab defense-report` build their PGD here from --eps, --steps and --alpha."""
    eps = _eps(eps)
    return PGD(eps=eps, alpha=eps / 10 if alpha is None else alpha, steps=steps, random_start=True, **common)


def pgd40(eps: float | None = None, **common) -> PGD:
    """PGD-40, the course's standard white-box evaluation: Linf, random start, 40 steps of eps / 10
    (step 0.01 at eps 0.1, so the 40 steps can cross the ball four times). Madry et al. (2018)
    attack their MNIST models with 40 and 100 steps of 0.01 at eps 0.3; the course keeps their 40 steps
    and scales the step with its smaller eps. Every `pgd40_linf0.1` record of the zoo was made with it."""
    return pgd(eps, steps=40, **common)


def fgsm(eps: float | None = None, **common) -> FGSM:
    """FGSM (Goodfellow et al. 2015): one signed-gradient step of size eps on the cross-entropy, Linf."""
    return FGSM(eps=_eps(eps), norm="linf", **common)


def autoattack(eps: float | None = None, version: str = "standard", norm: str = "linf", **options) -> AutoAttack:
    """AutoAttack as Croce & Hein (2020) define it: "standard" = APGD-CE, APGD-T (9 target classes),
    FAB-T (9 target classes), Square (5000 queries), 100 iterations and one restart each; "rand"
    (randomised defenses) = APGD-CE and APGD-DLR with EoT over 20 draws. options: n_classes (for a
    dataset with fewer than 10 classes; target classes min(9, n_classes - 1)), verbose, and the
    shared options."""
    return AutoAttack(_eps(eps, norm), norm, version=version, steps=100, n_queries=5000, **options)


def apgd_ce(eps: float | None = None, steps: int = 100, norm: str = "linf", **common) -> APGD:
    """APGD-CE, AutoAttack's first component (Croce & Hein 2020): 100 iterations, one restart,
    momentum 0.75, step 2 eps halved at the checkpoints (rho 0.75)."""
    return APGD(_eps(eps, norm), norm, steps=steps, n_restarts=1, loss="ce", **common)


def apgd_dlr(eps: float | None = None, steps: int = 100, norm: str = "linf", **common) -> APGD:
    """APGD-DLR (Croce & Hein 2020): APGD-CE's schedule on the scale-invariant Difference of Logits
    Ratio loss; with eot_iter=20 it is the second component of AutoAttack's "rand" version."""
    return APGD(_eps(eps, norm), norm, steps=steps, n_restarts=1, loss="dlr", **common)


def square(eps: float | None = None, n_queries: int = 5000, norm: str = "linf", **common) -> Square:
    """Square Attack (Andriushchenko et al. 2020) as AutoAttack runs it: 5000 queries, one restart,
    p_init 0.8, margin loss; score-based black box (no gradients)."""
    return Square(_eps(eps, norm), norm, n_queries=n_queries, n_restarts=1, p_init=0.8, loss="margin", **common)


def pgd_eot(eps: float | None = None, steps: int = 200, eot_iter: int = 20, **common) -> PGD:
    """PGD with Expectation over Transformation for stochastic purification defenses, the protocol
    of Lee & Kim (2023): 200 steps, gradients averaged over 20 draws of the defense, Linf, random
    start, step 0.007 at eps 8/255 scaled linearly to eps (0.0223 at eps 0.1). Run it on the
    defense's adaptive model (exact gradient or BPDA)."""
    eps = _eps(eps)
    return PGD(eps=eps, alpha=PGD_EOT_STEP * eps / PGD_EOT_EPS, steps=steps, random_start=True,
               eot_iter=eot_iter, **common)
