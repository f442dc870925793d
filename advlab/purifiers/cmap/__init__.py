"""CMAP purification (Zhang, Yang, Luo, Chen, Wang, Liu, Han & Tan, "Adversarial Purification by
Consistency-aware Latent Space Optimization on Data Manifolds"): K latents of a one-step consistency model
optimised to match the input (MAE + SSIM), kept at the prior's statistics, and a vote over the K images.

  model.py      ConsistencyModel: a small UNet in the EDM parameterisation; generate (one step), sample
                (multistep); the zoo builder (fmnist/consistency)
  train.py      consistency training from scratch (the improved recipe: pseudo-Huber, lognormal noise,
                the doubling curriculum), EMA weights, sample metrics
  purifier.py   CMAP, the purifier (stochastic, an inner optimisation: BPDA backward)
"""
