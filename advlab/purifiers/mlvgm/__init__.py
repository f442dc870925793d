"""MLVGM purification (Serez, Cristani, Del Bue, Murino & Morerio, "Pre-trained Multiple Latent Variable
Generative Models are good defenders against Adversarial Attacks"): a hierarchical VAE whose per-level
latents are interpolated between the input's encoding and prior samples.

  model.py      HVAEModel: three latent levels (4x4, 7x7, 14x14), residual posteriors, Bernoulli
                likelihood; encode, decode_mixed, sample, elbo; the zoo builder (fmnist/hvae)
  train.py      ELBO training with KL warm-up, free bits and EMA; the clean / grey-box report
  schedules.py  linear, cosine and learned alphas; the Bayesian-optimisation search (BoTorch, optional extra)
  purifier.py   MLVGM, the purifier (stochastic, differentiable end to end)
"""
