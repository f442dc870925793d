"""Matplotlib pictures used across the lectures, and the ipywidgets explorers built on them.

    from advlab import viz
    fig = viz.show_images(x[:16], labels=y[:16], class_names=data.class_names("fashion_mnist"))
    fig = viz.show_perturbations(x[:6], x_adv[:6])
    viz.save_figure(fig, OUT_DIR, "gallery")

Every name lives in one of these modules and is re-exported here, so `viz.NAME` is all a notebook
needs:

    core               general helpers: image grids, perturbation galleries, norm balls, accuracy vs ε,
                       accuracy bars labelled with their values (0% included), 2-D points coloured by
                       class with a legend, save_figure (and the colours and small helpers the lecture
                       modules share)
    l00_threat_models  lecture 00: budget-spending noise, who the attacker is
    l01_attacks        lecture 01: the loss landscape, PGD in 2-D, loss traces, targeted galleries
    l04_defense_gan    lecture 04: the GAN diagram, Defense-GAN's latent search
    l05_vaegan         lecture 05: the VAE-GAN diagram, purification steps
    l06_lqvae          lecture 06: the LQ-VAE diagram, bit flips of the code
    l07_carso          lecture 07: the CARSO diagram, the aggregation rules on one image's draws
    l08_mlvgm          lecture 08: the MLVGM diagram, schedules, the schedule search, random schedules
                       against their Spearman correlation, success rate against the L2 bound
    widgets            ipywidgets explorers (also importable as advlab.widgets); ipywidgets is imported
                       only when an explorer is built; each also carries a static picture of its
                       default state, which a static copy of the notebook shows

Helpers return their figure (or the axes they drew on) and never call `plt.show()`. Outside
Jupyter the non-interactive Agg backend is selected on import unless a backend was already
chosen. Importing advlab.viz never imports IPython or ipywidgets.
"""
# core first: it picks the matplotlib backend before anything imports matplotlib.pyplot
from advlab.viz.core import (CORRECT_COLOR, WRONG_COLOR, _as_images, _box, _grid, _in_jupyter_kernel,
                             _label_list, _name, _perturbation_grid, _project_l2_2d, _project_linf_2d,
                             _to_numpy, plot_accuracy_bars, plot_accuracy_vs_eps, plot_norm_balls, save_figure,
                             scatter_by_class, show_images, show_perturbations)
from advlab.viz.l00_threat_models import budget_noise, plot_threat_models, show_threat_model_noise
from advlab.viz.l01_attacks import (_TOY_A, _TOY_C, _one_image, _toy_grad, attack_loss_trace, loss_landscape,
                                    pgd_toy_2d, plot_loss_landscape, plot_loss_traces, plot_pgd_toy,
                                    show_targeted, toy_loss_2d)
from advlab.viz.l04_defense_gan import plot_gan_diagram, plot_latent_search
from advlab.viz.l05_vaegan import plot_purification_steps, plot_vaegan_diagram
from advlab.viz.l06_lqvae import plot_bit_flips, plot_lqvae_diagram
from advlab.viz.l07_carso import plot_aggregation_rules, plot_carso_diagram
from advlab.viz.l08_mlvgm import (plot_bo_history, plot_l2_curves, plot_mlvgm_diagram, plot_schedules,
                                  plot_spearman_study)
from advlab.viz import widgets  # imports torch only; ipywidgets waits until an explorer is built

__all__ = [
    # core
    "CORRECT_COLOR", "WRONG_COLOR", "show_images", "show_perturbations", "plot_norm_balls",
    "plot_accuracy_vs_eps", "plot_accuracy_bars", "scatter_by_class", "save_figure",
    # lecture 00
    "budget_noise", "show_threat_model_noise", "plot_threat_models",
    # lecture 01
    "loss_landscape", "plot_loss_landscape", "toy_loss_2d", "pgd_toy_2d", "plot_pgd_toy", "attack_loss_trace",
    "plot_loss_traces", "show_targeted",
    # lecture 04
    "plot_gan_diagram", "plot_latent_search",
    # lecture 05
    "plot_vaegan_diagram", "plot_purification_steps",
    # lecture 06
    "plot_lqvae_diagram", "plot_bit_flips",
    # lecture 07
    "plot_carso_diagram", "plot_aggregation_rules",
    # lecture 08
    "plot_mlvgm_diagram", "plot_schedules", "plot_bo_history", "plot_spearman_study", "plot_l2_curves",
    # explorers
    "widgets",
]
# the private helpers imported above (_as_images, _project_l2_2d, ...) stay reachable as viz._NAME,
# as they were when advlab.viz was one module; they are not part of __all__
