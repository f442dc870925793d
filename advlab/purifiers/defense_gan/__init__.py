"""Defense-GAN (Samangouei, Kabkab & Chellappa, ICLR 2018): projection on a WGAN-GP generator's range.

  model.py     the critic and the zoo builder of the generator (fmnist/wgan-gp)
  purifier.py  DefenseGAN, the purifier (latent search with restarts, BPDA backwards)
  train.py     WGAN-GP training of the generator
"""
