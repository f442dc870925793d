"""The VAE-GAN purifier (Larsen et al. 2016's VAE-GAN, used for purification by Agarwal et al.).

  model.py     encoder, decoder, discriminator and the zoo builder (fmnist/vaegan)
  purifier.py  VAEGANPurifier: reconstruction + discriminator-guided steps
  train.py     the VAE-GAN training
"""
