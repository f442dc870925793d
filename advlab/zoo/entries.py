"""The zoo's registry: one ZooEntry per named model, with the builder and trainer it needs, named
as strings ("module:function", "module") so that the registry imports nothing heavy.

A new model is one `register(ZooEntry(...))` here; `advlab train NAME --profile full` trains it
with `trainer.train_zoo_entry` (or the classifier loop when trainer is None).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ZooEntry:
    name: str
    arch: str                     # advlab.models architecture, or a builder name of a later module
    dataset: str
    description: str
    train: dict = field(default_factory=dict)        # TrainConfig overrides, full profile
    train_quick: dict = field(default_factory=dict)  # overrides for --profile quick
    arch_kwargs: dict = field(default_factory=dict)
    builder: str | None = None    # "module:function" building the model, for non-classifier entries
    trainer: str | None = None    # module whose train_zoo_entry(entry, args) trains it (default: advlab.training.loop)
    command_text: str | None = None   # how a model registered with zoo.register was made (no `advlab train`)

    @property
    def command(self) -> str:
        return self.command_text or f"advlab train {self.name} --profile full"


REGISTRY: dict[str, ZooEntry] = {}


def register(entry: ZooEntry) -> ZooEntry:
    """Add a ZooEntry to the bundled registry (one line per model in this file); returns it."""
    REGISTRY[entry.name] = entry
    return entry


register(ZooEntry("fmnist/cnn", "cnn", "fashion_mnist",
                  "SmallCNN (3 conv + 2 fc, BN, dropout), standard training",
                  train=dict(epochs=15, lr=0.05), train_quick=dict(epochs=1, n_train=5000, n_test=1000)))
register(ZooEntry("fmnist/mlp", "mlp", "fashion_mnist",
                  "MLP 784-512-256-10 with dropout, standard training (a third architecture for transfer attacks)",
                  train=dict(epochs=20, lr=0.05, seed=2, augment=False), train_quick=dict(epochs=1, n_train=5000, n_test=1000)))
register(ZooEntry("fmnist/vgg", "vgg", "fashion_mnist",
                  "VGG-style 6-conv net (VGG16's layout, used by the VAE-GAN purification paper, shrunk to 28x28), standard training",
                  train=dict(epochs=12, lr=0.05, seed=1), train_quick=dict(epochs=1, n_train=5000, n_test=1000)))
# adversarially trained (lecture 03): Linf eps 0.1, the course's default Fashion-MNIST threat model
_AT = "advlab.training.adversarial"
register(ZooEntry("fmnist/pgd-at", "cnn", "fashion_mnist",
                  "SmallCNN, PGD-AT (Madry): PGD-5 (step 0.03, random start) at Linf eps 0.1",
                  train=dict(method="pgd", eps=0.1, steps=5, alpha=0.03, epochs=20, lr=0.05, seed=3),
                  train_quick=dict(epochs=1, n_train=2000, n_test=500, steps=2), trainer=_AT))
register(ZooEntry("fmnist/trades", "cnn", "fashion_mnist",
                  "SmallCNN, TRADES (beta 6): KL-PGD-5 (step 0.03) at Linf eps 0.1",
                  train=dict(method="trades", eps=0.1, steps=5, alpha=0.03, beta=6.0, epochs=20, lr=0.05, seed=4),
                  train_quick=dict(epochs=1, n_train=2000, n_test=500, steps=2), trainer=_AT))
register(ZooEntry("fmnist/fgsm-at", "cnn", "fashion_mnist",
                  "SmallCNN, fast FGSM-AT (Wong et al. 2020): one FGSM step of 1.25 eps from a random start "
                  "at Linf eps 0.1 (the 'Adv Tr' column of the LQ-VAE paper's tables)",
                  train=dict(method="fgsm", eps=0.1, epochs=20, lr=0.05, seed=8),
                  train_quick=dict(epochs=1, n_train=2000, n_test=500), trainer=_AT))


# generative models of the purifiers (lecture 04 on); the zoo stores the generator only
register(ZooEntry("fmnist/wgan-gp", "wgan-gp-generator", "fashion_mnist",
                  "DCGAN-style generator (latent 128, N(0, I/128) prior, width 32, sigmoid output) trained with "
                  "WGAN-GP (lambda 10, n_critic 5, Adam 1e-4 betas (0.5, 0.9)); the generator of Defense-GAN. "
                  "Width 32, not 64: a training step is ~9x cheaper on CPU and so is every latent-search step",
                  train=dict(iters=6000, batch_size=64, seed=5),
                  train_quick=dict(iters=10, batch_size=32, n_train=2000, log_every=5, ckpt_every=5, eval_n=16,
                                   eval_steps=10, eval_restarts=2),
                  arch_kwargs=dict(latent_dim=128, width=32),
                  builder="advlab.purifiers.defense_gan.model:build_generator", trainer="advlab.purifiers.defense_gan.train"))
# the VAE-GAN purifier (Agarwal et al.): encoder, decoder and discriminator in one state_dict
register(ZooEntry("fmnist/vaegan", "vaegan", "fashion_mnist",
                  "VAE-GAN (Larsen et al. 2016; as in Agarwal et al.'s purification network): encoder, DCGAN decoder and discriminator whose "
                  "features give the reconstruction loss; latent 128, width 32, gamma 100, pixel weight 1, "
                  "Adam 3e-4 betas (0.5, 0.999), 50 epochs (Agarwal et al.)",
                  train=dict(iters=46875, batch_size=64, seed=6),
                  train_quick=dict(iters=20, batch_size=32, n_train=2000, log_every=5, ckpt_every=10, eval_n=64),
                  arch_kwargs=dict(latent_dim=128, width=32),
                  builder="advlab.purifiers.vaegan.model:build_vaegan", trainer="advlab.purifiers.vaegan.train"))
# the LQ-VAE purifier (Kyatham et al.): encoder, decoder 1 (g, inference) and decoder 2 (h, training) in one state_dict
register(ZooEntry("fmnist/lqvae", "lqvae", "fashion_mnist",
                  "LQ-VAE (Kyatham et al., Algorithm 1): encoder with the Lipschitz penalty (||grad_x (v . mu)|| - K)^2, "
                  "K 1, v a random unit latent direction; KL to N(0, I) with weight 0.1; 128 latent bits (chosen by the search in docs/results/lqvae_search_*), H = sign, "
                  "H~ = tanh(2 z / 0.5) in training; decoders g (on H(z), used to purify) and h (on H~(z), trains "
                  "the encoder), DCGAN layout width 32; Adam 1e-3, 50 epochs",
                  train=dict(iters=46875, batch_size=64, seed=7),
                  train_quick=dict(iters=20, batch_size=32, n_train=2000, log_every=5, ckpt_every=10, eval_n=64),
                  arch_kwargs=dict(latent_dim=128, width=32, levels=2, span=1.0, relax="soft", temperature=0.5),
                  builder="advlab.purifiers.lqvae.model:build_lqvae", trainer="advlab.purifiers.lqvae.train"))
# CARSO (Ballarin et al.): the representation-conditional VAE of fmnist/pgd-at; the zoo stores the CVAE only
register(ZooEntry("fmnist/carso", "carso", "fashion_mnist",
                  "CARSO's conditional VAE (Ballarin et al.) on fmnist/pgd-at's representation: the outputs of SmallCNN's "
                  "two block convs (features.4.0, features.5.0; the 28x28 stem conv left out, as the search on validation "
                  "chose: docs/results/carso_search.md), each compressed by three [3x3 valid conv, BN, LeakyReLU 0.2] "
                  "blocks (C -> C/2 -> C/4 -> C/8), "
                  "Linear 512; latent 64; transposed-conv decoder (width 32); summed BCE against the clean image + beta KL "
                  "(beta 0 for 12.5% of the iterations, then linear to 1 over 4%); RAdam 1e-3 with warm-up, plateau and "
                  "linear anneal; adversarially balanced batches (half of each: PGD-40 step 0.01 and FGSM, at eps/2 and "
                  "eps 0.1, on the classifier) drawn from a pool crafted once (CPU recipe: 3000 images per PGD setting, "
                  "10000 per FGSM setting); 6000 iterations of 64",
                  train=dict(iters=6000, batch_size=64, seed=9, pool="precomputed", pool_pgd_n=3000, pool_fgsm_n=10000),
                  train_quick=dict(iters=20, batch_size=32, n_train=2000, pool_pgd_n=16, pool_fgsm_n=16, pool_chunk=16,
                                   log_every=5, ckpt_every=10, eval_n=64),
                  arch_kwargs=dict(condition_shapes=[[64, 14, 14], [64, 14, 14]],
                                   layers=["features.4.0", "features.5.0"], latent_dim=64, fc_repr=512,
                                   width=32, enc_width=4),
                  builder="advlab.purifiers.carso.model:build_carso", trainer="advlab.purifiers.carso.train"))
# MLVGM purification (Serez et al.): a three-level hierarchical VAE (4x4, 7x7, 14x14 latent maps)
register(ZooEntry("fmnist/hvae", "hvae", "fashion_mnist",
                  "Hierarchical VAE for MLVGM purification (Serez et al.): 3 latent levels (4x4x8, 7x7x4, 14x14x2), "
                  "top-down path with residual posteriors (NVAE style), Bernoulli likelihood, width 64 (531k params, "
                  "sized for CPU training); KL warm-up 1500 iterations, free bits per channel 0.5 / 0.2 / 0.05 nats per "
                  "coordinate (4x4 / 7x7 / 14x14), Adam 2e-3 with cosine decay, EMA 0.999; 7000 iterations of 64",
                  train=dict(iters=7000, batch_size=64, seed=10, free_bits=[0.5, 0.2, 0.05]),
                  train_quick=dict(iters=20, batch_size=32, n_train=2000, log_every=5, ckpt_every=10, eval_n=64,
                                   kl_warmup=10, lr_warmup=5),
                  arch_kwargs=dict(width=64, z_channels=[8, 4, 2]),
                  builder="advlab.purifiers.mlvgm.model:build_hvae", trainer="advlab.purifiers.mlvgm.train"))
# CMAP (Zhang et al.): a consistency model trained from scratch by consistency training
register(ZooEntry("fmnist/consistency", "consistency", "fashion_mnist",
                  "Consistency model for CMAP purification (Zhang et al.): a UNet (width 32: 28x28 -> 14x14 -> 7x7, "
                  "noise embedding in every ResBlock) in the EDM parameterisation (sigma in [0.002, 80], sigma_data "
                  "0.5), trained from scratch by improved consistency training (pseudo-Huber loss, lognormal noise "
                  "levels, discretisation doubling from 10 to 1280 steps, no EMA teacher), RAdam 2e-4, dropout 0.1, "
                  "EMA 0.999 of the weights saved; 20000 iterations of 128",
                  train=dict(iters=20000, batch_size=128, seed=11),
                  train_quick=dict(iters=20, batch_size=16, n_train=2000, log_every=5, ckpt_every=10, eval_n=32),
                  arch_kwargs=dict(width=32, emb_dim=128, dropout=0.1),
                  builder="advlab.purifiers.cmap.model:build_consistency", trainer="advlab.purifiers.cmap.train"))
