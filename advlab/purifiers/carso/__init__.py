"""CARSO (Ballarin et al., "Carefully Blending Adversarial Training and Purification Improves Adversarial
Robustness"): an adversarially trained classifier and a conditional VAE conditioned on its internal
representation; N decoded draws classified and aggregated robustly.

  model.py     the representation-conditional VAE sized for SmallCNN, the activation hooks, zoo builder
  purifier.py  CARSO, the defense (stochastic; differentiable end to end; "mean_probs" backward)
  train.py     adversarially balanced batches (online or a precomputed pool), the beta and LR schedules
"""
