"""Consistency training of advlab.purifiers.cmap.model.ConsistencyModel from scratch: the improved recipe of
Song & Dhariwal ("Improved Techniques for Training Consistency Models"), at Fashion-MNIST's scale.

    cfg = CTConfig(iters=20000)
    model, metrics = train_consistency(cfg, checkpoint="build/checkpoints/ct.pt")   # resumable
    advlab train fmnist/consistency --profile full [--device cuda] [--threads 1]

One iteration, on a batch x (B, C, 28, 28) scaled to [-1, 1]:
  1. N(it) discretisation steps: the curriculum N = min(s0 * 2^floor(it / K'), s1) + 1 with s0 = 10,
     s1 = 1280 and K' = floor(iters / (log2(s1 / s0) + 1)): N doubles at regular intervals;
  2. sigma_0 < ... < sigma_{N-1}: karras_sigmas(N); an index i per row drawn with probability proportional
     to erf((ln sigma_{i+1} - P_mean) / (sqrt(2) P_std)) - erf((ln sigma_i - P_mean) / (sqrt(2) P_std))
     (the lognormal noise schedule, P_mean = -1.1, P_std = 2.0);
  3. one eps ~ N(0, I) per row: student f(x + sigma_{i+1} eps, sigma_{i+1}), teacher f(x + sigma_i eps, sigma_i)
     with the same network under stop-gradient (no EMA teacher);
  4. loss = mean over rows of lambda(sigma_i) d(student, teacher), lambda = 1 / (sigma_{i+1} - sigma_i), d the
     pseudo-Huber distance sqrt(||a - b||^2 + c^2) - c with c = 0.00054 sqrt(C * 28 * 28) (about 0.015);
  5. RAdam step; an exponential moving average of the weights (torch's AveragedModel) is what gets saved.
The paper's settings are for CIFAR-10 on many GPUs (400k iterations of 1024); `iters`, `batch_size`, `lr` and
the width are ours and recorded with the weights.
Metrics: the loss history, and at the end on `eval_n` samples (one step and two steps, sigmas (80, 0.8)):
the zoo classifier's class histogram and the fraction it classifies with confidence > 0.9.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from advlab.purifiers.cmap.model import ConsistencyModel, karras_sigmas
from advlab.validate import check_int

P_MEAN, P_STD, S0, S1 = -1.1, 2.0, 10, 1280


@dataclass
class CTConfig:
    dataset: str = "fashion_mnist"
    width: int = 32
    emb_dim: int = 128
    dropout: float = 0.1
    iters: int = 20000
    batch_size: int = 128
    lr: float = 2e-4
    ema_decay: float = 0.999
    n_train: int | None = None        # None: the whole training split
    seed: int = 0
    device: str = "auto"
    amp: bool = True                  # bf16 autocast of the network on CUDA (the loss in float32)
    cpu_bf16: bool = False            # the same autocast on the CPU: 1.5x per iteration on a 2-core AMX Xeon
                                      # (0.50 s against 0.77 s at batch 128); off unless asked for
    log_every: int = 100
    ckpt_every: int = 1000
    eval_n: int = 1000                # samples of the final metrics
    classifier: str = "fmnist/cnn"    # the zoo classifier that judges the samples


def check_config(cfg: CTConfig) -> None:
    """ValueError naming the first field of a CTConfig that is out of range."""
    for name in ("width", "emb_dim", "iters", "batch_size", "log_every", "ckpt_every", "eval_n"):
        check_int(getattr(cfg, name), name)
    for name, v, lo, hi in (("dropout", cfg.dropout, 0, 1), ("lr", cfg.lr, 0, math.inf), ("ema_decay", cfg.ema_decay, 0, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v < hi \
                or (name == "lr" and v == 0):
            raise ValueError(f"{name}: must be a number in [{lo}, {hi}){' and > 0' if name == 'lr' else ''}, got {v!r}")
    for name in ("amp", "cpu_bf16"):
        if not isinstance(getattr(cfg, name), bool):
            raise ValueError(f"{name}: must be True or False, got {getattr(cfg, name)!r}")


def n_steps(it: int, iters: int) -> int:
    """The discretisation curriculum N(it) (module docstring, step 1)."""
    k_prime = max(1, math.floor(iters / (math.log2(S1 // S0) + 1)))
    return min(S0 * 2 ** (it // k_prime), S1) + 1


def index_probabilities(sigmas: torch.Tensor) -> torch.Tensor:
    """P(i), i = 0..N-2, of the lognormal schedule over the N sigmas (step 2), float64 (N - 1,)."""
    cdf = torch.erf((torch.log(sigmas) - P_MEAN) / (math.sqrt(2) * P_STD))
    p = cdf[1:] - cdf[:-1]
    return p / p.sum()


def pseudo_huber(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sqrt(||a - b||^2 + c^2) - c per row, c = 0.00054 sqrt(dim): (B, ...) -> (B,)."""
    c = 0.00054 * math.sqrt(a[0].numel())
    return torch.sqrt((a - b).float().flatten(1).pow(2).sum(1) + c ** 2) - c


def ct_loss(model: ConsistencyModel, x: torch.Tensor, it: int, iters: int, g: torch.Generator,
            use_amp: bool = False) -> dict:
    """The consistency-training loss of one batch x (B, C, 28, 28) in [0, 1] at iteration `it` (steps 1-4):
    {"loss": scalar tensor, "n_steps": N, "mean_sigma": mean sigma_{i+1}}. Draws come from `g`."""
    n = n_steps(it, iters)
    sigmas = karras_sigmas(n)
    i = torch.multinomial(index_probabilities(sigmas), len(x), replacement=True, generator=g)
    s_lo, s_hi = (sigmas[i].to(x.device, x.dtype), sigmas[i + 1].to(x.device, x.dtype))
    x = 2 * x - 1
    eps = torch.randn(x.shape, generator=g).to(x)
    view = (-1,) + (1,) * (x.dim() - 1)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
        student = model(x + s_hi.view(view) * eps, s_hi)
        with torch.no_grad():
            teacher = model(x + s_lo.view(view) * eps, s_lo)
    weight = 1 / (s_hi - s_lo)
    loss = (weight * pseudo_huber(student, teacher)).mean()
    return {"loss": loss, "n_steps": float(n), "mean_sigma": s_hi.mean().detach()}


def train_consistency(cfg: CTConfig, checkpoint: str | Path | None = None, progress: bool = True
                      ) -> tuple[ConsistencyModel, dict]:
    """Train (or resume) the consistency model; returns (the EMA model in eval mode, metrics). All random
    draws come from one CPU generator seeded by cfg.seed, saved in the checkpoints."""
    from advlab import data
    from advlab.generative.blocks import make_ema
    from advlab.training.loop import iteration_run, train_iterations
    check_config(cfg)
    device, use_amp, x_train, g = iteration_run(cfg)
    use_amp = use_amp or (cfg.cpu_bf16 and device.type == "cpu")
    channels = data.info(cfg.dataset).shape[0]
    model = ConsistencyModel(channels, cfg.width, cfg.emb_dim, cfg.dropout).to(device)
    opt = torch.optim.RAdam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0)    # constant lr; last_epoch = the iteration
    ema = make_ema(model, cfg.ema_decay)
    states = dict(model=model, opt=opt, sched=sched, ema=ema)
    model.train()

    def step() -> dict:
        real = x_train[torch.randint(0, len(x_train), (cfg.batch_size,), generator=g).to(device)]
        out = ct_loss(model, real, sched.last_epoch, cfg.iters, g, use_amp)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        ema.update_parameters(model)
        sched.step()
        return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in out.items()}

    history, seconds = train_iterations(cfg, step, g, states, checkpoint, "CT",
                                        {"loss": "{loss:.4f}", "N": "{n_steps:.0f}"}, progress)
    final = ConsistencyModel(channels, cfg.width, cfg.emb_dim, cfg.dropout).to(device)
    final.load_state_dict(ema.module.state_dict())
    final.eval()
    metrics = {"iters": cfg.iters, "train_seconds": round(seconds, 1), "weights": "ema",
               "params": sum(p.numel() for p in final.parameters())}
    metrics |= sample_metrics(final, cfg)
    metrics["history"] = history
    return final, metrics


@torch.no_grad()
def sample_metrics(model: ConsistencyModel, cfg: CTConfig) -> dict:
    """Class histogram and fraction classified with confidence > 0.9 by the zoo classifier, for eval_n samples
    at one step and at two steps (sigmas 80, 0.8); empty when no trained zoo classifier of cfg.dataset exists."""
    from advlab import zoo
    entry = zoo.REGISTRY.get(cfg.classifier)
    if entry is None or entry.dataset != cfg.dataset:          # e.g. synthetic data in the tests: no judge
        return {}
    try:
        clf = zoo.load(cfg.classifier, device=next(model.parameters()).device)
    except zoo.NotTrainedError:
        return {}
    out = {}
    for name, sigmas in (("one_step", (80.0,)), ("two_steps", (80.0, 0.8))):
        g = torch.Generator().manual_seed(cfg.seed)
        x = torch.cat([model.sample(min(250, cfg.eval_n - i), sigmas, g) for i in range(0, cfg.eval_n, 250)])
        p = torch.softmax(clf(x), 1)
        out[name] = {"confident_0.9": round((p.max(1).values > 0.9).float().mean().item(), 4),
                     "class_histogram": torch.bincount(p.argmax(1), minlength=p.shape[1]).tolist()}
    return {"samples": out, "samples_judged_by": cfg.classifier, "samples_n": cfg.eval_n}


def train_zoo_entry(entry, args) -> int:
    """`advlab train fmnist/consistency --profile quick|full [--out DIR] [--threads 1]`: train and save the
    EMA weights (the checkpoint goes to DIR/checkpoints with --out, else build/checkpoints)."""
    from advlab.training.zoo_entry import train_and_save
    return train_and_save(entry, args, CTConfig, lambda cfg, checkpoint: train_consistency(cfg, checkpoint=checkpoint),
                          summary=("train_seconds", "params"))
