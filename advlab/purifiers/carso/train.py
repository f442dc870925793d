"""Training of CARSO's conditional VAE (Ballarin et al., "Carefully Blending Adversarial Training and
Purification Improves Adversarial Robustness"); the model is advlab.purifiers.carso.model's.

    model, metrics = train_carso(CARSOConfig(iters=2000))     # classifier: zoo cfg.classifier

What the paper (and its official code) fixes, and we follow:
  loss        summed pixel-wise binary cross-entropy of the reconstruction against the *clean* image
              + beta * KL(q(z | x, c) || N(0, I)), both per image, averaged over the batch.
  beta        0 for the first 12.5% of the iterations, then linear to 1 over the next 4% (`beta_at`;
              the paper counts epochs, we count iterations).
  optimiser   RAdam with a linear warm-up (12.5%), a plateau (12.5%) and a linear anneal to 0 (`lr_at`,
              a LambdaLR). The paper adds Lookahead; torch has none, so we skip it.
  batches     adversarially balanced: a fraction (adv_fraction, the paper's 0.5 on CIFAR-10) of every
              shuffled batch is perturbed, split evenly over four attacks on the classifier alone:
              PGD-40 (step 0.01, random start) at eps/2 and at eps, FGSM at eps/2 and at eps
              (`SETTINGS`); the rest is clean; the target is always the clean image. The classifier
              is frozen (eval mode) and its representation is taken without gradient.

Where the adversarial examples come from (cfg.pool):
  "online"       each batch is attacked as it is drawn, as in the paper (a GPU's recipe: one batch of
                 64 costs about 2 x 16 x 40 classifier gradients).
  "precomputed"  the CPU recipe: a pool of adversarial examples is crafted once, per attack setting on
                 its own random images of the training split (pool_pgd_n images for each PGD setting,
                 pool_fgsm_n for each FGSM one: FGSM costs 1/40 of PGD-40), cached as safetensors chunks
                 under pool_dir (resumable; keyed by the classifier's weights and every setting), and each
                 batch's perturbed rows are drawn from it. The balance of every batch is the paper's; the
                 adversarial examples are not fresh, and there are fewer distinct ones than with online
                 attacks (the zoo record says so).

Resumable: checkpoints every ckpt_every iterations (advlab.training.loop.train_iterations), keyed by
the exact config; the pool is cached on its own.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from advlab.generative.losses import kl_divergence
from advlab.purifiers.carso.model import (SMALLCNN_LAYERS, SMALLCNN_SHAPES, CARSOModel, _check_number,
                                          _check_shapes, classifier_features, feature_shapes)
from advlab.validate import check_int, device_name

# the four attack settings of an adversarially balanced batch: (name, attack, fraction of eps); kind k+1
SETTINGS = (("pgd_half", "pgd", 0.5), ("pgd_full", "pgd", 1.0), ("fgsm_half", "fgsm", 0.5), ("fgsm_full", "fgsm", 1.0))
POOLS = ("online", "precomputed")


@dataclass
class CARSOConfig:
    dataset: str = "fashion_mnist"
    classifier: str = "fmnist/pgd-at"   # zoo name of the (adversarially trained) classifier
    layers: list = field(default_factory=lambda: list(SMALLCNN_LAYERS))
    condition_shapes: list | None = field(default_factory=lambda: [list(s) for s in SMALLCNN_SHAPES])
    # (C, H, W) per layer; None: taken from the classifier's layers when training starts
    latent_dim: int = 64
    fc_repr: int = 512
    width: int = 32
    enc_width: int = 4
    eps: float = 0.1                    # the classifier's threat model (Linf)
    adv_fraction: float = 0.5           # perturbed fraction of each batch
    pgd_steps: int = 40
    pgd_alpha: float = 0.01
    pool: str = "online"                # "online" or "precomputed" (see the module docstring)
    pool_pgd_n: int = 3000              # precomputed: images per PGD setting
    pool_fgsm_n: int = 10000            # precomputed: images per FGSM setting
    pool_chunk: int = 250               # images per cached chunk
    pool_dir: str = "build/cache/carso_pool"
    iters: int = 6000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: float = 0.125               # LR: linear warm-up, plateau, then linear anneal to 0
    plateau: float = 0.125
    beta_start: float = 0.125           # beta: 0 until this fraction of the iterations ...
    beta_ramp: float = 0.04             # ... then linear to 1 over this fraction
    n_train: int | None = None          # None: the whole training split
    seed: int = 0
    device: str = "auto"
    amp: bool = True                    # unused: the model trains in float32 (kept for the shared setup)
    log_every: int = 100
    ckpt_every: int = 500
    eval_n: int = 500                   # test images (seed + 100) of the final metrics


def check_config(cfg: CARSOConfig) -> None:
    """ValueError naming the first field of a CARSOConfig that is out of range."""
    for name in ("latent_dim", "fc_repr", "width", "enc_width", "pgd_steps", "pool_pgd_n", "pool_fgsm_n",
                 "pool_chunk", "iters", "batch_size", "log_every", "ckpt_every", "eval_n"):
        check_int(getattr(cfg, name), name)
    for name in ("eps", "pgd_alpha", "lr"):
        _check_number(name, getattr(cfg, name), positive=True)
    for name in ("adv_fraction", "warmup", "plateau", "beta_start", "beta_ramp"):
        _check_number(name, getattr(cfg, name), maximum=1.0)
    if cfg.warmup + cfg.plateau > 1:
        raise ValueError(f"plateau: warmup + plateau must be <= 1, got {cfg.warmup} + {cfg.plateau}")
    if cfg.pool not in POOLS:
        raise ValueError(f"pool: must be one of {POOLS}, got {cfg.pool!r}")
    if cfg.condition_shapes is not None:
        _check_shapes(cfg.condition_shapes)
        if len(cfg.layers) != len(cfg.condition_shapes):
            raise ValueError(f"layers: {len(cfg.layers)} names for {len(cfg.condition_shapes)} condition_shapes; "
                             "set condition_shapes too, or condition_shapes=None to take them from the classifier")


# ----------------------------------------------------------------------------- schedules
def beta_at(it: int, iters: int, start: float = 0.125, ramp: float = 0.04) -> float:
    """The KL weight at iteration `it` (0-based) of `iters`: 0 while it < start * iters, then linear to 1
    at (start + ramp) * iters, 1 after (a step at start * iters when ramp is 0)."""
    t = it / iters
    if t < start:
        return 0.0
    if ramp == 0:
        return 1.0
    return min(1.0, (t - start) / ramp)


def lr_at(it: int, iters: int, warmup: float = 0.125, plateau: float = 0.125) -> float:
    """The LR multiplier at iteration `it` (0-based): linear warm-up to 1 over warmup * iters
    iterations, 1 for plateau * iters, then linear to 0 at `iters`."""
    w, p = warmup * iters, (warmup + plateau) * iters
    if it < w:
        return (it + 1) / w
    if it < p:
        return 1.0
    return max(0.0, (iters - it) / max(iters - p, 1.0))


# ----------------------------------------------------------------------------- balanced batches
def split_counts(batch_size: int, fraction: float) -> list[int]:
    """Rows of a batch per setting: [clean, pgd_half, pgd_full, fgsm_half, fgsm_full]; round(fraction *
    batch_size) perturbed rows split as evenly as possible (the first settings get the remainder)."""
    n_adv = int(round(fraction * batch_size))
    per = [n_adv // 4 + (i < n_adv % 4) for i in range(4)]
    return [batch_size - n_adv] + per


def make_attack(kind: int, cfg: CARSOConfig, seed: int = 0):
    """The attack of setting `kind` (1..4, see SETTINGS) on the classifier, Linf."""
    from advlab import attacks
    _, name, scale = SETTINGS[kind - 1]
    if name == "pgd":
        return attacks.PGD(eps=cfg.eps * scale, alpha=cfg.pgd_alpha, steps=cfg.pgd_steps, random_start=True,
                           seed=seed, checks=False)
    return attacks.FGSM(eps=cfg.eps * scale, seed=seed, checks=False)


def balanced_batch(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: CARSOConfig,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An adversarially balanced batch, attacked now (pool="online"): (inputs, targets, kinds).

    Random rows of x (N, C, H, W) are perturbed, split_counts(N, cfg.adv_fraction) of them per setting,
    by attacks on `classifier` alone; targets = x (always clean); kinds (N,) int64, 0 for clean rows and
    k for SETTINGS[k - 1].
    """
    counts = split_counts(len(x), cfg.adv_fraction)
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    inputs, kinds = x.clone(), torch.zeros(len(x), dtype=torch.long, device=x.device)
    start = counts[0]
    for k, c in enumerate(counts[1:], 1):
        rows = perm[start:start + c]
        start += c
        if c:
            seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator))
            inputs[rows] = make_attack(k, cfg, seed)(classifier, x[rows], y[rows])
            kinds[rows] = k
    return inputs, x, kinds


def _fingerprint(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def pool_key(cfg: CARSOConfig, classifier_fp: str) -> dict:
    """What a cached pool depends on (its folder is named by this dict's hash)."""
    return {"classifier": classifier_fp, "dataset": cfg.dataset, "n_train": cfg.n_train, "seed": cfg.seed,
            "eps": cfg.eps, "pgd_steps": cfg.pgd_steps, "pgd_alpha": cfg.pgd_alpha, "pool_pgd_n": cfg.pool_pgd_n,
            "pool_fgsm_n": cfg.pool_fgsm_n, "pool_chunk": cfg.pool_chunk, "settings": [list(s) for s in SETTINGS]}


def build_pool(classifier: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, cfg: CARSOConfig,
               progress: bool = True) -> tuple[dict, dict]:
    """Craft (or read back) the precomputed pool: ({kind: (index (n,) into x_train, x_adv (n, C, H, W))}, info).

    Setting k attacks its own random images of x_train (pool_pgd_n or pool_fgsm_n of them, drawn with
    seed cfg.seed + k), in chunks of pool_chunk saved as safetensors under
    cfg.pool_dir/<key hash>/ as soon as each is done; an existing chunk is read instead of crafted,
    so an interrupted run resumes. info: the key, the folder, the seconds each chunk took to craft
    (also kept in the folder's pool.json) and the seconds of this call.
    """
    from safetensors.torch import load_file, save_file
    key = pool_key(cfg, _fingerprint(classifier))
    folder = Path(cfg.pool_dir) / hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / "pool.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"key": key, "chunk_seconds": {}}
    t_call = time.time()
    pool = {}
    for k, (name, attack, _) in enumerate(SETTINGS, 1):
        n = min(cfg.pool_pgd_n if attack == "pgd" else cfg.pool_fgsm_n, len(x_train))
        index = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(cfg.seed + k))[:n]
        parts = []
        for start in range(0, n, cfg.pool_chunk):
            path = folder / f"{name}_{start:06d}.safetensors"
            idx = index[start:start + cfg.pool_chunk]
            if path.exists():
                got = load_file(str(path))
                if torch.equal(got["index"], idx):
                    parts.append(got["x_adv"])
                    continue
            t0 = time.time()
            xb, yb = x_train[idx], y_train[idx]
            x_adv = make_attack(k, cfg, seed=cfg.seed * 1_000_003 + k * 100_003 + start)(classifier, xb, yb)
            tmp = path.with_suffix(".tmp")
            save_file({"index": idx.contiguous(), "x_adv": x_adv.detach().cpu().contiguous()}, str(tmp))
            os.replace(tmp, path)
            meta["chunk_seconds"][path.stem] = round(time.time() - t0, 1)
            _write_text(meta_path, json.dumps(meta, indent=1))
            if progress:
                print(f"CARSO pool: {path.name} ({len(idx)} images) in {time.time() - t0:.1f} s", flush=True)
            parts.append(x_adv.detach().cpu())
        pool[k] = (index, torch.cat(parts).to(x_train.device))
    info = {"key": key, "folder": str(folder), "seconds_this_run": round(time.time() - t_call, 1),
            "seconds_to_craft": round(sum(meta["chunk_seconds"].values()), 1),
            "sizes": {SETTINGS[k - 1][0]: len(v[0]) for k, v in pool.items()}}
    return pool, info


def pool_batch(pool: dict, x_train: torch.Tensor, cfg: CARSOConfig, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An adversarially balanced batch drawn from the precomputed pool: (inputs, targets, kinds) as
    `balanced_batch` (clean rows: random training images; setting k's rows: random entries of pool[k],
    with their clean originals as targets)."""
    counts = split_counts(cfg.batch_size, cfg.adv_fraction)
    rows = torch.randint(0, len(x_train), (counts[0],), generator=generator)
    inputs, targets, kinds = [x_train[rows.to(x_train.device)]], [x_train[rows.to(x_train.device)]], [torch.zeros(counts[0], dtype=torch.long)]
    for k, c in enumerate(counts[1:], 1):
        index, x_adv = pool[k]
        pick = torch.randint(0, len(index), (c,), generator=generator)
        inputs.append(x_adv[pick.to(x_adv.device)])
        targets.append(x_train[index[pick].to(x_train.device)])
        kinds.append(torch.full((c,), k, dtype=torch.long))
    return torch.cat(inputs), torch.cat(targets), torch.cat(kinds).to(x_train.device)


# ----------------------------------------------------------------------------- the loss
def compute_losses(model: CARSOModel, classifier: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                   beta: float, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The CVAE loss on one batch: "loss" = "rec" + beta * "kl", with "rec" the summed pixel BCE of the
    reconstruction of `inputs` against `targets` (the clean images) and "kl" the summed KL, both per
    image and averaged over the batch. The classifier's representation of `inputs` is taken without
    gradient (its parameters and the inputs get none)."""
    with torch.no_grad():
        feats, _ = classifier_features(classifier, inputs, model.layers)
    logits, mu, logvar = model(inputs, feats, generator)
    rec = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).sum(1).mean()
    kl = kl_divergence(mu, logvar).mean()
    return {"loss": rec + beta * kl, "rec": rec, "kl": kl}


# ----------------------------------------------------------------------------- training
def _load_classifier(cfg: CARSOConfig, device) -> nn.Module:
    from advlab import zoo
    return zoo.load(cfg.classifier, device=device)


def train_carso(cfg: CARSOConfig, classifier: nn.Module | None = None, checkpoint: str | Path | None = None,
                progress: bool = True) -> tuple[CARSOModel, dict]:
    """Train the conditional VAE on the frozen `classifier` (default: zoo cfg.classifier); returns (model
    in eval mode, metrics). All random draws (batches, attack seeds, posterior noise) come from one CPU
    generator seeded by cfg.seed, saved in the checkpoints with the model, the optimiser and the LR
    schedule, so a resumed run continues exactly."""
    from advlab import data
    from advlab.purifiers.carso import purifier  # noqa: F401 (the final metrics use it; loaded now, not after hours)
    from advlab.training.loop import iteration_run, train_iterations
    check_config(cfg)
    device, _, x_train, g = iteration_run(cfg)
    _, y_train = data.batch(cfg.dataset, "train", n=cfg.n_train, seed=cfg.seed)
    y_train = y_train.to(device)
    classifier_given = classifier is not None
    classifier = (classifier if classifier_given else _load_classifier(cfg, device)).to(device).eval()
    for p in classifier.parameters():
        p.requires_grad_(False)        # frozen: attacks and the condition need input gradients only
    channels = data.info(cfg.dataset).shape[0]
    shapes = feature_shapes(classifier, cfg.layers, tuple(x_train.shape[1:]))
    if cfg.condition_shapes is None:
        cfg.condition_shapes = [list(s) for s in shapes]       # recorded with the weights
    if [list(s) for s in shapes] != [list(s) for s in cfg.condition_shapes]:
        raise ValueError(f"condition_shapes: the classifier's layers {list(cfg.layers)} give {shapes}, "
                         f"the config says {cfg.condition_shapes}")
    model = CARSOModel(cfg.condition_shapes, cfg.layers, cfg.latent_dim, cfg.fc_repr, cfg.width, cfg.enc_width,
                       channels).to(device)
    opt = torch.optim.RAdam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_at(it, cfg.iters, cfg.warmup, cfg.plateau))
    pool, pool_info = (build_pool(classifier, x_train, y_train, cfg, progress) if cfg.pool == "precomputed"
                       else (None, None))
    model.train()

    def step() -> dict:
        it = sched.last_epoch                   # iterations done so far (restored on resume)
        beta = beta_at(it, cfg.iters, cfg.beta_start, cfg.beta_ramp)
        if pool is not None:
            inputs, targets, _ = pool_batch(pool, x_train, cfg, g)
        else:
            rows = torch.randint(0, len(x_train), (cfg.batch_size,), generator=g).to(device)
            inputs, targets, _ = balanced_batch(classifier, x_train[rows], y_train[rows], cfg, g)
        losses = compute_losses(model, classifier, inputs, targets, beta, g)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        sched.step()
        return {k: v.item() for k, v in losses.items()} | {"beta": beta, "lr": opt.param_groups[0]["lr"]}

    history, seconds = train_iterations(cfg, step, g, dict(model=model, opt=opt, sched=sched), checkpoint, "CARSO",
                                        {"rec": "{rec:.1f}", "kl": "{kl:.1f}", "beta": "{beta:.2f}"}, progress)
    model.eval()
    given = classifier_given and f"a given {type(classifier).__name__} (not the zoo's {cfg.classifier})"
    metrics = {"iters": cfg.iters, "train_seconds": round(seconds, 1), "classifier": given or cfg.classifier,
               "classifier_fingerprint": _fingerprint(classifier),
               "params": sum(p.numel() for p in model.parameters()), "inference_params": model.inference_parameters()}
    if pool_info is not None:
        metrics["pool"] = {"mode": "precomputed", "seconds_to_craft": pool_info["seconds_to_craft"],
                           "sizes": pool_info["sizes"],
                           "note": "adversarial examples crafted once on the classifier (CPU recipe), "
                                   "drawn into every batch with the paper's balance"}
    else:
        metrics["pool"] = {"mode": "online"}
    metrics |= reconstruction_metric(model, classifier, cfg)
    metrics["history"] = history
    return model, metrics


@torch.no_grad()
def reconstruction_metric(model: CARSOModel, classifier: nn.Module, cfg: CARSOConfig, n_samples: int = 8) -> dict:
    """On cfg.eval_n clean test images (seed cfg.seed + 100): the per-pixel squared error of one prior
    draw's reconstruction, the classifier's accuracy on that draw and on the images, and CARSO's
    accuracy with n_samples draws and its aggregation."""
    from advlab import data
    from advlab.purifiers.carso.purifier import CARSO
    x, y = data.batch(cfg.dataset, "test", n=cfg.eval_n, seed=cfg.seed + 100)
    dev = next(model.parameters()).device
    x, y = x.to(dev), y.to(dev)
    defense = CARSO(model, classifier, n_samples=n_samples, seed=cfg.seed).eval()
    first = defense.purify(x)
    defense.reseed(cfg.seed)
    return {"recon_mse": round((first - x).pow(2).mean().item(), 6),
            "recon_acc": round((classifier(first).argmax(1) == y).float().mean().item(), 4),
            "classifier_acc": round((classifier(x).argmax(1) == y).float().mean().item(), 4),
            "carso_acc": round((defense(x).argmax(1) == y).float().mean().item(), 4),
            "recon_setting": f"clean test images (n={cfg.eval_n}, seed {cfg.seed + 100}); one prior draw; "
                             f"carso_acc with {n_samples} draws"}


def train_zoo_entry(entry, args) -> int:
    """`advlab train fmnist/carso --profile quick|full [--out DIR]`: train and save the CVAE into the zoo.

    The checkpoint goes to DIR/checkpoints when --out is given, else build/checkpoints; it is keyed by
    the exact config, so a run only ever resumes itself. The pool lies in the config's pool_dir.
    `--set 'layers=["features.4.0", "features.5.0"]'` alone conditions on those layers with the shapes the
    classifier gives them (condition_shapes=null is added to the settings; the shapes are recorded).
    """
    import argparse
    from advlab.training.zoo_entry import train_and_save
    sets = list(getattr(args, "set", None) or [])
    keys = {t.partition("=")[0] for t in sets}
    if "layers" in keys and "condition_shapes" not in keys:     # the entry's shapes belong to its own layers
        args = argparse.Namespace(**(vars(args) | {"set": sets + ["condition_shapes=null"]}))
    return train_and_save(entry, args, CARSOConfig,
                          lambda cfg, checkpoint: train_carso(cfg, checkpoint=checkpoint),
                          summary=("recon_mse", "recon_acc", "classifier_acc", "carso_acc", "train_seconds", "pool"))


# ----------------------------------------------------------------------------- the measurement
def grey_box_report(n: int = 1000, seed: int = 0, n_samples: int = 8, ablation_samples: int = 16,
                    eps: float = 0.1, alpha: float = 0.01, steps: int = 40, chunk: int = 100,
                    device: str = "cpu", command: str | None = None) -> dict:
    """Clean and grey-box accuracy of CARSO.from_zoo("fashion_mnist") next to its classifier alone.

    On the fixed test subset data.batch("fashion_mnist", "test", n, seed): the grey-box attack is
    PGD-`steps` (step alpha, random start, Linf eps) crafted on the classifier alone, then given to the
    defense. "carso" rows are the defense as shipped (n_samples draws, CARSO's aggregation, its seed 0
    stream, chunks of `chunk` images in order); the ablation rows re-classify `ablation_samples` fresh
    draws (a separate generator, seed + 1) and score their first K with each aggregation rule, and with
    CARSO's rule for several K. No adaptive attack here: that is the honest-evaluation ensemble's job.
    """
    import time
    from advlab import attacks, data, zoo
    from advlab.purifiers.carso.purifier import CARSO
    from advlab.purifiers.voting import RULES, aggregate, worst_of_n
    from advlab.training.loop import resolve_device
    dev = resolve_device(device)
    defense = CARSO.from_zoo("fashion_mnist", device=dev, n_samples=n_samples, seed=0)
    names = dict(CARSO.ZOO["fashion_mnist"])
    clf = defense.classifier
    x, y = data.batch("fashion_mnist", "test", n=n, seed=seed, device=dev)
    attack = attacks.PGD(eps=eps, alpha=alpha, steps=steps, random_start=True, seed=seed)
    t0 = time.time()
    x_adv = attack(clf, x, y)
    attack_seconds = time.time() - t0
    ks = sorted({1, 4, n_samples, ablation_samples})
    rows = {}
    for setting, inputs in (("clean", x), ("grey_box", x_adv)):
        with torch.no_grad():
            t0 = time.time()
            defense.reseed(0)
            scores = torch.cat([defense(inputs[i:i + chunk]) for i in range(0, n, chunk)])
            seconds = time.time() - t0
            g = torch.Generator().manual_seed(seed + 1)
            logits = torch.cat([defense.draw_logits(inputs[i:i + chunk], ablation_samples, g)
                                for i in range(0, n, chunk)], dim=1)                 # (K, n, classes)
            acc = lambda s: round((s.argmax(1) == y).float().mean().item(), 4)   # noqa: E731
            rows[setting] = {
                "classifier": acc(clf(inputs)),
                "carso": acc(scores),
                "carso_seconds": round(seconds, 1),
                "first_draw": acc(logits[0]),
                "rules_at_n": {r: acc(aggregate(logits[:n_samples], r)) for r in RULES},
                "carso_rule_by_n": {str(k): acc(aggregate(logits[:k], "carso")) for k in ks},
                "all_n_correct": round(worst_of_n(logits[:n_samples], y).float().mean().item(), 4),
            }
    with torch.no_grad():                                 # purify throughput, after a warm-up call
        defense.purify(x[:8])
        t0 = time.time()
        defense.purify(x[:256])
        speed = 256 / (time.time() - t0)
    rec = zoo.info(names["cvae"])
    return {
        "defense": defense.describe(), "models": {m: zoo.info(m)["sha256"] for m in names.values()},
        "cvae_training": {"command": rec.get("command"), "device": rec.get("device"),
                          "iters": rec.get("metrics", {}).get("iters"),
                          "train_seconds": rec.get("metrics", {}).get("train_seconds"),
                          "pool": rec.get("metrics", {}).get("pool")},
        "test_subset": {"dataset": "fashion_mnist", "split": "test", "n": n, "seed": seed},
        "attack": repr(attack), "attack_on": names["classifier"], "attack_seconds": round(attack_seconds, 1),
        "n_samples": n_samples, "ablation": {"samples": ablation_samples, "generator_seed": seed + 1},
        "results": rows, "purify_images_per_s": round(speed, 1), "device": device_name(dev, cpu_model=True), "command": command,
    }


def format_report(rep: dict) -> str:
    """The report as markdown."""
    r = rep["results"]
    pct = lambda v: f"{100 * v:.1f}%"   # noqa: E731
    k = rep["n_samples"]
    lines = [f"# CARSO on Fashion-MNIST: clean and grey box ({rep['test_subset']['n']} test images, seed "
             f"{rep['test_subset']['seed']})", "",
             f"Defense: `{rep['defense']}`, classifier `{rep['attack_on']}` + CVAE `fmnist/carso`.  ",
             f"Grey box: `{rep['attack']}` crafted on `{rep['attack_on']}` alone, then classified by each row's model.  ",
             f"Device: {rep['device']}. Command: `{rep['command']}`.", "",
             "| model | clean | grey box |", "|---|---|---|",
             f"| {rep['attack_on']} alone | {pct(r['clean']['classifier'])} | {pct(r['grey_box']['classifier'])} |",
             f"| CARSO ({k} draws, CARSO's aggregation; the defense as shipped) | **{pct(r['clean']['carso'])}** | "
             f"**{pct(r['grey_box']['carso'])}** |", "",
             f"Ablations on {rep['ablation']['samples']} fresh draws (generator seed {rep['ablation']['generator_seed']}), "
             "same images:", "", "| scoring | clean | grey box |", "|---|---|---|",
             f"| one reconstruction (first draw) | {pct(r['clean']['first_draw'])} | {pct(r['grey_box']['first_draw'])} |"]
    for rule, v in r["clean"]["rules_at_n"].items():
        lines.append(f"| {k} draws, rule `{rule}` | {pct(v)} | {pct(r['grey_box']['rules_at_n'][rule])} |")
    for n, v in r["clean"]["carso_rule_by_n"].items():
        lines.append(f"| {n} draws, rule `carso` | {pct(v)} | {pct(r['grey_box']['carso_rule_by_n'][n])} |")
    lines.append(f"| all {k} draws correct (worst of {k}) | {pct(r['clean']['all_n_correct'])} | "
                 f"{pct(r['grey_box']['all_n_correct'])} |")
    t = rep["cvae_training"]
    pool = t.get("pool") or {}
    lines += ["", f"CVAE training: `{t['command']}` on {t['device']}, {t['iters']} iterations in {t['train_seconds']} s; "
              f"adversarial examples: {pool.get('mode')} pool {pool.get('sizes')} "
              f"(crafted in {pool.get('seconds_to_craft')} s).  ",
              f"Purify: {rep['purify_images_per_s']} images/s ({rep['device']}); PGD on the classifier took "
              f"{rep['attack_seconds']} s.", "",
              "No adaptive attack is reported here: the grey-box row attacks the classifier alone and says nothing "
              "about an attacker who differentiates through CARSO (`CARSO.adaptive_model()`).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    """python -m advlab.purifiers.carso.train report [--n 1000] [--seed 0] [--threads 1] [--out docs/results]"""
    import argparse
    import shlex
    import sys
    p = argparse.ArgumentParser(prog="python -m advlab.purifiers.carso.train", description=main.__doc__)
    p.add_argument("action", choices=("report",))
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-samples", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="docs/results")
    args = p.parse_args(argv)
    if args.n < 1 or args.n_samples < 1:
        p.error("--n and --n-samples must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python -m advlab.purifiers.carso.train " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    rep = grey_box_report(n=args.n, seed=args.seed, n_samples=args.n_samples, device=args.device, command=command)
    out = Path(args.out) / f"carso_fmnist_n{args.n}_seed{args.seed}"
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_text(out.with_suffix(".json"), json.dumps(rep, indent=1) + "\n")
    text = format_report(rep)
    _write_text(out.with_suffix(".md"), text)
    print(text)
    print(f"written: {out}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
