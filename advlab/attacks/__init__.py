"""Attacks. Each is a callable `atk(model, x, y) -> x_adv` on images in [0, 1]; see base.py for
the contract every attack keeps. Argument names follow torchattacks.
"""
from advlab.attacks.base import (Attack, NORMS, ce_loss, dlr_loss, dlr_loss_targeted, margin_loss, project,
                                 project_l2, project_linf, random_in_ball, runtime_checks, target_labels)
