"""Training: the loop every model uses, adversarial training, and training a zoo entry.

  loop         TrainConfig, train (seeded, resumable, AMP on CUDA, DDP under torchrun), the
               iteration loop the generative models share (`advlab.train` is this module)
  adversarial  PGD-AT (Madry et al.), TRADES (Zhang et al.), fast FGSM-AT (Wong et al.) and the
               catastrophic-overfitting monitor
  zoo_entry    train a registered zoo entry from its profile and save it with the exact command
"""
