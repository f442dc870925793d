"""Attacks. Each is a callable `atk(model, x, y) -> x_adv` on images in [0, 1]; see base.py for
the contract every attack keeps. Argument names follow torchattacks. The course's standard settings
(PGD-40, AutoAttack, PGD-EoT, ...) are defined once in `presets`.
"""
from advlab.attacks.base import (Attack, NORMS, ce_loss, dlr_loss, dlr_loss_targeted, margin_loss, project,
                                 project_l2, project_linf, random_in_ball, runtime_checks, target_labels)
from advlab.attacks.fgsm import FGSM
from advlab.attacks.pgd import BIM, PGD
from advlab.attacks.cw import CW
from advlab.attacks.deepfool import DeepFool
from advlab.attacks.bpda import BPDA, bpda_model
from advlab.attacks.transfer import Transfer
from advlab.attacks.apgd import APGD, APGDT
from advlab.attacks.fab import FAB
from advlab.attacks.square import Square
from advlab.attacks.autoattack import AutoAttack
from advlab.attacks import presets  # noqa: E402 (the standard settings, built from the classes above)
