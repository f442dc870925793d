"""LQ-VAE: a Lipschitz-constrained encoder, quantised latents and two decoders.

  model.py     quantiser, encoder, the two-decoder model, the Lipschitz penalty, code flips, zoo builder
  purifier.py  LQVAE, the purifier (decode the quantised code; BPDA backwards)
  train.py     Algorithm 1 (the dual-decoder training)
"""
