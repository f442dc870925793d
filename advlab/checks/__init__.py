"""Immediate, specific feedback for the exercise notebooks: one check per exercise blank.

Each exercise blank is followed by a check cell:

    from advlab import checks
    checks.check_linf_norm(linf_norm)

A check runs the student's function on fixed inputs, compares it with advlab's reference
implementation and either prints "✅ ..." (returns True) or raises AssertionError with a
specific diagnosis ("your FGSM leaves the [0,1] box at 37 pixels ..."). A blank that is still
`raise NotImplementedError` prints "⏳ not implemented yet — fill in the blank above" instead
(returns False), so exercise notebooks run top to bottom in CI. Cells that *use* a student's
function call it through `checks.run_check(fn, ...)`; `checks.summary()` prints which checks passed.

The package:
  framework        the registry (`CHECKS`: exercise name -> check; `RESULTS`: name -> last outcome),
                   `register`, `fail`, `run_check`, `summary` and the standard diagnoses (assert_*,
                   `call_student`, `fixed_images`), for writing checks;
  l00_setup        exercise set 00, norms and threat models;
  l01_attacks      01, FGSM, the projections, a PGD step, the targeted loss, PGD;
  l02_stronger     02, the DLR loss, the C&W objective, robust accuracy from norms, transfer;
  l03_training     03, the PGD-AT inner loop, the TRADES loss;
  l04_defense_gan  04, Defense-GAN's latent search with restarts, BPDA;
  l05_vaegan       05, the VAE-GAN purifier's discriminator step and latent purification;
  l06_lqvae        06, the LQ-VAE's gradient-norm penalty and quantiser;
  l07_carso        07, CARSO's robust aggregation and one adversarially balanced batch;
  l08_mlvgm        08, MLVGM's per-level interpolation and the cosine schedule;
  l09_cmap         09, CMAP's latent distribution loss and its majority vote;
  l10_evaluation   10, the EoT gradient, the per-image worst case over attacks and draws, a BPDA wrapper;
  l11_leaderboard  11, a Wilson confidence interval, the per-image worst case and the paired (McNemar) test.
Every name a notebook uses is re-exported here, so notebooks only ever write `checks.<name>`.
Importing the package imports torch and nothing heavier (no Jupyter, no matplotlib): the reference
implementations a check compares with are imported inside that check.
"""
from .framework import (
    CHECKS, PENDING, RESULTS, assert_close, assert_in_ball, assert_in_box, assert_tensor, call_student, fail,
    fixed_images, register, run_check, summary,
)
from .l00_setup import (
    check_corner_l2, check_in_threat_model, check_l2_norm, check_linf_norm, check_random_linf_perturbation,
)
from .l01_attacks import (
    check_fgsm, check_pgd, check_pgd_step, check_project_l2, check_project_linf, check_targeted_loss,
)
from .l02_stronger import check_cw_objective, check_dlr_loss, check_robust_acc_from_norms, check_transfer_table
from .l03_training import check_pgd_at_examples, check_trades_loss
from .l04_defense_gan import check_bpda, check_latent_search_restarts
from .l05_vaegan import check_discriminator_step, check_purify_latent
from .l06_lqvae import check_gradient_norm_penalty, check_quantiser
from .l07_carso import check_balanced_batch, check_carso_aggregation
from .l08_mlvgm import check_cosine_schedule, check_level_mix
from .l09_cmap import check_distribution_loss, check_majority_vote
from .l10_evaluation import check_bpda_wrapper, check_eot_gradient, check_robust_images
from .l11_leaderboard import check_paired_test, check_wilson_interval, check_worst_case_accuracy

# importable but outside __all__: fixtures of the checks that the tests reuse,
# checks._toy_classifier (exercise set 01's toy model) and checks._latent_search_case (Defense-GAN's)
from .l01_attacks import _toy_classifier  # noqa: F401
from .l04_defense_gan import _latent_search_case  # noqa: F401

__all__ = [
    # framework: state, the decorator, running and summarising checks, the standard diagnoses
    "CHECKS", "PENDING", "RESULTS", "fail", "register", "run_check", "summary",
    "assert_close", "assert_in_ball", "assert_in_box", "assert_tensor", "call_student", "fixed_images",
    # 00: norms and threat models
    "check_linf_norm", "check_l2_norm", "check_in_threat_model", "check_random_linf_perturbation",
    "check_corner_l2",
    # 01: FGSM and PGD
    "check_fgsm", "check_project_linf", "check_project_l2", "check_pgd_step", "check_targeted_loss", "check_pgd",
    # 02: stronger attacks
    "check_dlr_loss", "check_cw_objective", "check_robust_acc_from_norms", "check_transfer_table",
    # 03: adversarial training
    "check_pgd_at_examples", "check_trades_loss",
    # 04: Defense-GAN
    "check_latent_search_restarts", "check_bpda",
    # 05: VAE-GAN purification
    "check_discriminator_step", "check_purify_latent",
    # 06: LQ-VAE
    "check_gradient_norm_penalty", "check_quantiser",
    # 07: CARSO
    "check_carso_aggregation", "check_balanced_batch",
    # 08: MLVGM
    "check_level_mix", "check_cosine_schedule",
    # 09: CMAP
    "check_distribution_loss", "check_majority_vote",
    # 10: evaluating defenses honestly
    "check_eot_gradient", "check_robust_images", "check_bpda_wrapper",
    # 11: the leaderboard
    "check_wilson_interval", "check_worst_case_accuracy", "check_paired_test",
]
