"""One readable training loop for every model in the course.

    cfg = TrainConfig(arch="cnn", dataset="fashion_mnist", epochs=12)
    model, metrics = train(cfg)

`loss_fn(model, x, y) -> loss` replaces plain cross-entropy, which is how adversarial training
(lecture 03) reuses this loop. Checkpoints (safetensors + a json of optimiser-free state) are
written after every epoch when `checkpoint` is set, and training resumes from them.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from advlab import data, models
from advlab.evaluate import accuracy


@dataclass
class TrainConfig:
    arch: str = "cnn"
    dataset: str = "fashion_mnist"
    epochs: int = 12
    batch_size: int = 128
    lr: float = 0.05              # peak learning rate of the one-cycle schedule (SGD, Nesterov)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    augment: bool = True          # random 2-pixel shifts + horizontal flips
    n_train: int | None = None    # None: the whole training split
    n_test: int | None = None     # None: the whole test split
    seed: int = 0
    device: str = "auto"
    amp: bool = True              # bf16 autocast on CUDA; ignored on CPU
    arch_kwargs: dict = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available here")
    return dev


def augment_batch(x: torch.Tensor, generator: torch.Generator | None = None, shift: int = 2, flip: bool = True) -> torch.Tensor:
    """Per-image random translation by up to `shift` pixels (zero padding) and horizontal flip."""
    n, c, h, w = x.shape
    g = dict(generator=generator, device="cpu")
    xp = F.pad(x, (shift,) * 4)
    di = torch.randint(0, 2 * shift + 1, (n,), **g).to(x.device)
    dj = torch.randint(0, 2 * shift + 1, (n,), **g).to(x.device)
    rows = (di[:, None] + torch.arange(h, device=x.device))[:, None, :, None]   # (n,1,h,1)
    cols = (dj[:, None] + torch.arange(w, device=x.device))[:, None, None, :]   # (n,1,1,w)
    out = xp[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    if flip:
        mask = (torch.rand(n, **g) < 0.5).to(x.device)[:, None, None, None]
        out = torch.where(mask, out.flip(3), out)
    return out


def train(cfg: TrainConfig, model: nn.Module | None = None,
          loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
          checkpoint: str | Path | None = None, progress: bool = True) -> tuple[nn.Module, dict]:
    """Train `model` (or a fresh `cfg.arch`) and return it in eval mode with its metrics."""
    if cfg.epochs < 1:
        raise ValueError(f"epochs: must be >= 1, got {cfg.epochs}")
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model = (model or models.build(cfg.arch, cfg.dataset, **cfg.arch_kwargs)).to(device)
    x_train, y_train = data.batch(cfg.dataset, "train", n=cfg.n_train, seed=cfg.seed)
    x_test, y_test = data.batch(cfg.dataset, "test", n=cfg.n_test, seed=cfg.seed)
    steps_per_epoch = math.ceil(len(y_train) / cfg.batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.25)
    loss_fn = loss_fn or (lambda m, xb, yb: F.cross_entropy(m(xb), yb, label_smoothing=cfg.label_smoothing))
    use_amp = cfg.amp and device.type == "cuda"
    history, start_epoch = [], 0
    g = torch.Generator().manual_seed(cfg.seed)  # shuffling and augmentation
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt and ckpt.with_suffix(".pt.json").exists():
        start_epoch, history = _resume(ckpt, model, opt, sched, g)
    t0 = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        perm = torch.randperm(len(y_train), generator=g)
        bar = tqdm(range(steps_per_epoch), desc=f"{cfg.arch} epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False)
        total_loss, correct, seen = 0.0, 0, 0
        for step in bar:
            idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            xb, yb = x_train[idx].to(device), y_train[idx].to(device)
            if cfg.augment:
                xb = augment_batch(xb, g)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = loss_fn(model, xb, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(yb)
            seen += len(yb)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{total_loss / seen:.3f}")
        test_acc = accuracy(model, x_test.to(device), y_test.to(device))
        history.append({"epoch": epoch + 1, "train_loss": total_loss / seen, "test_acc": test_acc,
                        "seconds": round(time.time() - t0, 1)})
        if progress:
            print(f"epoch {epoch + 1}/{cfg.epochs}: train loss {total_loss / seen:.4f}, "
                  f"test acc {100 * test_acc:.2f}% ({len(y_test)} images)")
        if ckpt:
            _save_checkpoint(ckpt, model, opt, sched, g, epoch + 1, history)
    model.eval()
    metrics = {"clean_acc": history[-1]["test_acc"] if history else None, "n_test": len(y_test),
               "epochs": cfg.epochs, "train_seconds": round(time.time() - t0, 1), "history": history}
    return model, metrics


def _save_checkpoint(path: Path, model, opt, sched, g: torch.Generator, epoch: int, history: list) -> None:
    # our own file, written and read by this loop only and loaded with weights_only=True;
    # the RNG states make a resumed run identical to an uninterrupted one
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "g": g.get_state(), "torch_rng": torch.get_rng_state()}, path)
    path.with_suffix(".pt.json").write_text(json.dumps({"epoch": epoch, "history": history}))


def _resume(path: Path, model, opt, sched, g: torch.Generator) -> tuple[int, list]:
    meta = json.loads(path.with_suffix(".pt.json").read_text())
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    g.set_state(state["g"])
    torch.set_rng_state(state["torch_rng"])
    print(f"resuming from {path} after epoch {meta['epoch']}")
    return meta["epoch"], meta["history"]


def config_dict(cfg: TrainConfig) -> dict:
    return asdict(cfg)
