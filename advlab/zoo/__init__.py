"""The pretrained model zoo: a plain registry of named models.

    clf = zoo.load("fmnist/cnn")          # eval-mode nn.Module, [0,1] images -> logits

Weights live in advlab/zoo/weights/*.safetensors; advlab/zoo/manifest.json records for each
entry its sha256, config, the exact `advlab train` command, metrics, device, date and size.
`load` refuses a file whose sha256 differs from the manifest's (weights are never unpickled).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

ZOO_DIR = Path(__file__).resolve().parent


class ChecksumError(RuntimeError):
    """A weights file does not match the sha256 recorded in the manifest."""


class NotTrainedError(FileNotFoundError):
    """A registered zoo entry has no weights yet; the message says which command trains it."""


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
    trainer: str | None = None    # module whose train_zoo_entry(entry, args) trains it (default: advlab.train)

    @property
    def command(self) -> str:
        return f"advlab train {self.name} --profile full"


REGISTRY: dict[str, ZooEntry] = {}


def register(entry: ZooEntry) -> ZooEntry:
    REGISTRY[entry.name] = entry
    return entry


register(ZooEntry("fmnist/cnn", "cnn", "fashion_mnist",
                  "SmallCNN (3 conv + 2 fc, BN, dropout), standard training",
                  train=dict(epochs=15, lr=0.05), train_quick=dict(epochs=1, n_train=5000, n_test=1000)))
register(ZooEntry("fmnist/mlp", "mlp", "fashion_mnist",
                  "MLP 784-512-256-10 with dropout, standard training (a third architecture for transfer attacks)",
                  train=dict(epochs=20, lr=0.05, seed=2, augment=False), train_quick=dict(epochs=1, n_train=5000, n_test=1000)))
register(ZooEntry("fmnist/vgg", "vgg", "fashion_mnist",
                  "VGG-style 6-conv net (paper 002's VGG16 layout shrunk to 28x28), standard training",
                  train=dict(epochs=12, lr=0.05, seed=1), train_quick=dict(epochs=1, n_train=5000, n_test=1000)))
# adversarially trained (lecture 03): Linf eps 0.1, the course's default Fashion-MNIST threat model
_AT = "advlab.defenses.adversarial_training"
register(ZooEntry("fmnist/pgd-at", "cnn", "fashion_mnist",
                  "SmallCNN, PGD-AT (Madry): PGD-5 (step 0.03, random start) at Linf eps 0.1",
                  train=dict(method="pgd", eps=0.1, steps=5, alpha=0.03, epochs=20, lr=0.05, seed=3),
                  train_quick=dict(epochs=1, n_train=2000, n_test=500, steps=2), trainer=_AT))
register(ZooEntry("fmnist/trades", "cnn", "fashion_mnist",
                  "SmallCNN, TRADES (beta 6): KL-PGD-5 (step 0.03) at Linf eps 0.1",
                  train=dict(method="trades", eps=0.1, steps=5, alpha=0.03, beta=6.0, epochs=8, lr=0.05, seed=4),
                  train_quick=dict(epochs=1, n_train=2000, n_test=500, steps=2), trainer=_AT))
register(ZooEntry("fmnist/fgsm-at", "cnn", "fashion_mnist",
                  "SmallCNN, fast FGSM-AT (Wong et al. 2020): one FGSM step of 1.25 eps from a random start "
                  "at Linf eps 0.1 (paper 004's 'Adv Tr' column)",
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
                  builder="advlab.generative.wgan:build_generator", trainer="advlab.generative.wgan"))
# paper 002's purifier: encoder, decoder and discriminator in one state_dict
register(ZooEntry("fmnist/vaegan", "vaegan", "fashion_mnist",
                  "VAE-GAN (Larsen et al. 2016; paper 002): encoder, DCGAN decoder and discriminator whose "
                  "features give the reconstruction loss; latent 128, width 32, gamma 100, pixel weight 1, "
                  "Adam 3e-4 betas (0.5, 0.999), 50 epochs (paper 002)",
                  train=dict(iters=46875, batch_size=64, seed=6),
                  train_quick=dict(iters=20, batch_size=32, n_train=2000, log_every=5, ckpt_every=10, eval_n=64),
                  arch_kwargs=dict(latent_dim=128, width=32),
                  builder="advlab.generative.vaegan:build_vaegan", trainer="advlab.generative.vaegan"))
# paper 004's purifier: encoder, decoder 1 (g, inference) and decoder 2 (h, training) in one state_dict
register(ZooEntry("fmnist/lqvae", "lqvae", "fashion_mnist",
                  "LQ-VAE (paper 004, Algorithm 1): encoder with the Lipschitz penalty (||grad_x (v . mu)|| - K)^2, "
                  "K 1, v a random unit latent direction; KL to N(0, I) with weight 0.1; 128 latent bits (chosen by the search in docs/results/lqvae_search_*), H = sign, "
                  "H~ = tanh(2 z / 0.5) in training; decoders g (on H(z), used to purify) and h (on H~(z), trains "
                  "the encoder), DCGAN layout width 32; Adam 1e-3, 50 epochs",
                  train=dict(iters=46875, batch_size=64, seed=7),
                  train_quick=dict(iters=20, batch_size=32, n_train=2000, log_every=5, ckpt_every=10, eval_n=64),
                  arch_kwargs=dict(latent_dim=128, width=32, levels=2, span=1.0, relax="soft", temperature=0.5),
                  builder="advlab.generative.lqvae:build_lqvae", trainer="advlab.generative.lqvae"))


def names() -> list[str]:
    return sorted(REGISTRY)


def _entry(name: str) -> ZooEntry:
    if name not in REGISTRY:
        raise ValueError(f"name: unknown zoo model {name!r}; available: {names()}")
    return REGISTRY[name]


def manifest_path(root: str | Path | None = None) -> Path:
    return Path(root or os.environ.get("ADVLAB_ZOO") or ZOO_DIR) / "manifest.json"


def read_manifest(root: str | Path | None = None) -> dict:
    p = manifest_path(root)
    return json.loads(p.read_text()) if p.exists() else {}


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def info(name: str, root: str | Path | None = None) -> dict:
    """The manifest record of a trained entry (raises NotTrainedError when there is none)."""
    entry = _entry(name)
    rec = read_manifest(root).get(name)
    if rec is None:
        raise NotTrainedError(f"zoo model {name!r} has no trained weights in {manifest_path(root).parent}.\n"
                              f"  train it with:  {entry.command}")
    return rec


def build(name: str, config: dict | None = None) -> nn.Module:
    """A fresh, untrained model of the entry's architecture.

    config: a manifest record's training config; its sizes win over the registry's, so weights
    trained with other sizes (`advlab train NAME --set latent_dim=128`) load into the right shapes.
    """
    entry = _entry(name)
    kwargs = dict(entry.arch_kwargs)
    if config:
        if entry.builder:   # generative configs hold the sizes as fields
            kwargs |= {k: config[k] for k in kwargs if k in config}
        else:
            kwargs |= config.get("arch_kwargs", {})
    if entry.builder:
        import importlib
        mod, fn = entry.builder.split(":")
        return getattr(importlib.import_module(mod), fn)(**kwargs)
    from advlab import models
    return models.build(entry.arch, entry.dataset, **kwargs)


def load(name: str, device: str | torch.device = "cpu", root: str | Path | None = None) -> nn.Module:
    """The pretrained model `name`, in eval mode, on `device`; refuses a checksum mismatch."""
    from safetensors.torch import load_file
    rec = info(name, root)
    path = manifest_path(root).parent / rec["file"]
    if not path.exists():
        raise NotTrainedError(f"zoo model {name!r}: the manifest lists {path} but the file is missing.\n"
                              f"  train it with:  {_entry(name).command}")
    digest = sha256_file(path)
    if digest != rec["sha256"]:
        raise ChecksumError(f"zoo model {name!r}: {path} has sha256 {digest[:16]}..., the manifest says "
                            f"{rec['sha256'][:16]}...; refusing to load. Re-train with: {_entry(name).command}")
    model = build(name, rec.get("config"))
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.to(device).eval()


def save(name: str, model: nn.Module, config: dict, metrics: dict, command: str,
         root: str | Path | None = None, device: str = "cpu") -> dict:
    """Write the entry's safetensors file and its manifest record; returns the record."""
    from safetensors.torch import save_file
    _entry(name)
    root = manifest_path(root).parent
    rel = f"weights/{name.replace('/', '__')}.safetensors"
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    rec = {"file": rel, "sha256": sha256_file(path), "size_bytes": path.stat().st_size,
           "config": config, "command": command, "metrics": metrics, "device": device,
           "torch": torch.__version__, "host": platform.machine(),
           "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")}
    with _locked(root / ".manifest.lock"):  # several trainings may finish at once
        man = read_manifest(root)
        man[name] = rec
        tmp = manifest_path(root).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(dict(sorted(man.items())), indent=2) + "\n")
        tmp.replace(manifest_path(root))
    return rec


def record_evaluation(name: str, key: str, result: dict, root: str | Path | None = None) -> dict:
    """Add an evaluation (attack repr, n, accuracies) under record["evaluations"][key]; the weights
    and their sha256 are untouched. Returns the updated record."""
    root = manifest_path(root).parent
    with _locked(root / ".manifest.lock"):
        man = read_manifest(root)
        if name not in man:
            raise NotTrainedError(f"zoo model {name!r} has no record in {root}")
        man[name].setdefault("evaluations", {})[key] = result
        tmp = manifest_path(root).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(dict(sorted(man.items())), indent=2) + "\n")
        tmp.replace(manifest_path(root))
    return man[name]


class _locked:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.f = open(self.path, "w")
        try:
            import fcntl
            fcntl.flock(self.f, fcntl.LOCK_EX)
        except ImportError:  # Windows: no advisory locks; saves are rare enough
            pass
        return self

    def __exit__(self, *exc):
        self.f.close()
