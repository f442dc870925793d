"""Training of the hierarchical VAE of advlab.purifiers.mlvgm.model (zoo `fmnist/hvae`): the ELBO with a
Bernoulli likelihood, KL warm-up and free bits, Adam with a cosine learning rate, an optional EMA of the
weights (torch.optim.swa_utils.AveragedModel), resumable through advlab.training.loop.train_iterations.

    model, metrics = train_hvae(HVAEConfig(iters=2000))

Loss per batch (nats per image, averaged over the batch):
    recon + beta(t) * sum_levels sum_channels max(free_bits * H_i * W_i, mean_batch KL_channel)
  recon      sum over pixels of the Bernoulli negative log-likelihood of x under sigmoid(logits)
  beta(t)    KL warm-up: linear from 0 to 1 over the first `kl_warmup` iterations
  free bits  (Kingma et al. 2016) per latent channel of each level: a channel whose batch-mean KL is
             below free_bits nats per coordinate pays the constant floor instead (no gradient pushing it
             to 0): keeps every level, the coarse one in particular, from collapsing onto the prior.
             One number, or one per level (coarsest first): a larger floor at the coarse levels lets them
             carry more of the image for free, which is where the purifier keeps the input (see the
             zoo entry for the values and docs/results/hvae_fmnist.md for why).
Learning rate: linear warm-up over `lr_warmup` iterations, then cosine from lr to lr * lr_final.
Gradients are clipped to `grad_clip` (global norm); a step whose loss is not finite is skipped.

Metrics (on `eval_n` test images, the EMA weights when ema_decay > 0): recon_mse (per pixel, decoder mean
from posterior means), elbo_bpd (negative ELBO in bits/dim, one posterior sample), kl_per_level (nats per
image) and the mean KL per coordinate per level.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from advlab.generative.blocks import make_ema
from advlab.purifiers.mlvgm.model import LOG2, HVAEModel
from advlab.validate import check_int, device_name


@dataclass
class HVAEConfig:
    dataset: str = "fashion_mnist"
    width: int = 64
    z_channels: list = field(default_factory=lambda: [8, 4, 2])
    iters: int = 7000
    batch_size: int = 64
    lr: float = 2e-3
    lr_warmup: int = 200          # iterations of linear lr warm-up
    lr_final: float = 0.05        # the cosine ends at lr * lr_final
    kl_warmup: int = 1500         # iterations of KL warm-up (beta 0 -> 1); 0: beta = 1 throughout
    free_bits: float | list = 0.05  # nats per latent coordinate, per channel; one number or one per level
    grad_clip: float = 300.0
    ema_decay: float = 0.999      # 0: no EMA
    n_train: int | None = None    # None: the whole training split
    seed: int = 0
    device: str = "auto"
    amp: bool = True              # bf16 autocast on CUDA (the losses in float32)
    log_every: int = 100
    ckpt_every: int = 500
    eval_n: int = 1000            # test images of the final metrics


def check_config(cfg: HVAEConfig) -> None:
    """ValueError naming the first field of the HVAE config that is out of range."""
    for name in ("width", "iters", "batch_size", "log_every", "ckpt_every", "eval_n"):
        check_int(getattr(cfg, name), name)
    for name in ("lr_warmup", "kl_warmup"):
        check_int(getattr(cfg, name), name, minimum=0)
    if not isinstance(cfg.z_channels, (list, tuple)) or len(cfg.z_channels) != 3:
        raise ValueError(f"z_channels: expected 3 ints (coarsest level first), got {cfg.z_channels!r}")
    fb = cfg.free_bits
    if isinstance(fb, (list, tuple)) and (len(fb) != 3 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in fb)):
        raise ValueError(f"free_bits: expected one number >= 0 or 3 (one per level), got {fb!r}")
    for name, lo, hi in (("lr", 0, math.inf), ("lr_final", 0, 1), ("free_bits", 0, math.inf),
                         ("grad_clip", 0, math.inf), ("ema_decay", 0, 1)):
        v = getattr(cfg, name)
        if name == "free_bits" and isinstance(v, (list, tuple)):
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi \
                or (name in ("lr", "grad_clip") and v == 0) or (name == "ema_decay" and v == 1):
            raise ValueError(f"{name}: must be a finite number in [{lo}, {hi}]{' (not 0)' if name in ('lr', 'grad_clip') else ''}"
                             f"{' (not 1)' if name == 'ema_decay' else ''}, got {v!r}")


def beta_at(it: int, cfg: HVAEConfig) -> float:
    """KL weight at iteration `it` (0-based): linear 0 -> 1 over cfg.kl_warmup iterations, then 1."""
    return 1.0 if cfg.kl_warmup == 0 else min(1.0, (it + 1) / cfg.kl_warmup)


def lr_factor(it: int, cfg: HVAEConfig) -> float:
    """Multiplier of cfg.lr at iteration `it`: linear warm-up, then cosine down to cfg.lr_final."""
    if it < cfg.lr_warmup:
        return (it + 1) / cfg.lr_warmup
    span = max(1, cfg.iters - cfg.lr_warmup)
    t = min(1.0, (it - cfg.lr_warmup) / span)
    return cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * t))


def free_bits_kl(kl: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The KL term of one level with free bits: kl (N, k, H, W) elementwise -> a scalar,
    sum over channels of max(free_bits * H * W, batch-mean KL of the channel)."""
    per_channel = kl.sum((2, 3)).mean(0)                                  # (k,)
    return torch.clamp(per_channel, min=free_bits * kl.shape[2] * kl.shape[3]).sum()


def compute_losses(model: HVAEModel, x: torch.Tensor, beta: float, cfg: HVAEConfig,
                   generator: torch.Generator, use_amp: bool = False) -> dict[str, torch.Tensor]:
    """The training loss on the batch x (N, C, 28, 28) and its parts (nats per image, batch means):
    "loss", "recon", "kl" (total, without free bits), "kl1".."kl3" (per level), "bpd" (negative ELBO
    in bits/dim, beta 1, no free bits)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
        recon, kls, _ = model.loss_terms(x, generator)
    recon = recon.float()
    kls = [k.float() for k in kls]
    kl_levels = [k.flatten(1).sum(1).mean() for k in kls]
    kl_total = sum(kl_levels)
    fb = cfg.free_bits if isinstance(cfg.free_bits, (list, tuple)) else [cfg.free_bits] * len(kls)
    kl_term = sum(free_bits_kl(k, f) for k, f in zip(kls, fb))
    loss = recon.mean() + beta * kl_term
    out = {"loss": loss, "recon": recon.mean(), "kl": kl_total,
           "bpd": (recon.mean() + kl_total) / (x[0].numel() * LOG2)}
    out |= {f"kl{i + 1}": v for i, v in enumerate(kl_levels)}
    return out


def train_hvae(cfg: HVAEConfig, checkpoint: str | Path | None = None, progress: bool = True
               ) -> tuple[HVAEModel, dict]:
    """Train the hierarchical VAE; returns (model in eval mode, metrics). The returned model holds the
    EMA weights when cfg.ema_decay > 0.

    All random draws (batches, posterior noise) come from one CPU generator seeded by cfg.seed; a
    checkpoint every cfg.ckpt_every iterations stores it with the model, EMA, optimiser and iteration,
    so a resumed run continues exactly where it stopped.
    """
    from advlab import data
    from advlab.training.loop import iteration_run, train_iterations
    check_config(cfg)
    device, use_amp, x_train, g = iteration_run(cfg)
    channels = data.info(cfg.dataset).shape[0]
    model = HVAEModel(cfg.width, tuple(cfg.z_channels), channels).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(it, cfg))   # last_epoch = iteration
    states = dict(model=model, opt=opt, sched=sched)
    ema = None
    if cfg.ema_decay > 0:
        ema = make_ema(model, cfg.ema_decay)
        states["ema"] = ema
    model.train()

    def step() -> dict:
        it = sched.last_epoch
        real = x_train[torch.randint(0, len(x_train), (cfg.batch_size,), generator=g).to(device)]
        losses = compute_losses(model, real, beta_at(it, cfg), cfg, g, use_amp)
        opt.zero_grad(set_to_none=True)
        out = {k: v.item() for k, v in losses.items()}
        if math.isfinite(out["loss"]):
            losses["loss"].backward()
            norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            out["grad_norm"] = norm.item()
            if math.isfinite(out["grad_norm"]):
                opt.step()
                if ema is not None:
                    ema.update_parameters(model)
            out["skipped"] = float(not math.isfinite(out["grad_norm"]))
        else:
            out |= {"grad_norm": float("nan"), "skipped": 1.0}
        sched.step()
        out["beta"] = beta_at(it, cfg)
        return out

    history, seconds = train_iterations(cfg, step, g, states, checkpoint, "HVAE",
                                        {"bpd": "{bpd:.3f}", "kl": "{kl:.1f}", "beta": "{beta:.2f}"}, progress)
    final = model
    if ema is not None:
        final = HVAEModel(cfg.width, tuple(cfg.z_channels), channels).to(device)
        final.load_state_dict(ema.module.state_dict())
    final.eval()
    metrics = {"iters": cfg.iters, "train_seconds": round(seconds, 1),
               "params": sum(p.numel() for p in final.parameters()), "weights": "ema" if ema is not None else "last"}
    metrics |= evaluation_metrics(final, cfg)
    metrics["history"] = history
    return final, metrics


@torch.no_grad()
def evaluation_metrics(model: HVAEModel, cfg: HVAEConfig, chunk: int = 250) -> dict:
    """recon_mse, elbo_bpd, kl per level (nats per image and per coordinate) on cfg.eval_n test images."""
    from advlab import data
    dev = next(model.parameters()).device
    x, _ = data.batch(cfg.dataset, "test", n=cfg.eval_n, seed=cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    mse, bpd, kls = 0.0, 0.0, torch.zeros(model.n_levels)
    for i in range(0, len(x), chunk):
        xc = x[i:i + chunk].to(dev)
        mse += (model.reconstruct(xc) - xc).pow(2).mean((1, 2, 3)).sum().item()
        recon, kl, _ = model.loss_terms(xc, g)
        kl_img = torch.stack([k.flatten(1).sum(1) for k in kl], 1)                    # (n, levels)
        bpd += ((recon + kl_img.sum(1)) / (xc[0].numel() * LOG2)).sum().item()
        kls += kl_img.sum(0).cpu()
    n = len(x)
    dims = [k * h * w for k, h, w in model.latent_shapes()]
    return {"recon_mse": round(mse / n, 6), "elbo_bpd": round(bpd / n, 4),
            "kl_per_level": [round(v / n, 2) for v in kls.tolist()],
            "kl_per_dim": [round(v / n / d, 4) for v, d in zip(kls.tolist(), dims)],
            "eval_setting": f"{n} test images (seed {cfg.seed}); recon from posterior means; ELBO with one "
                            f"posterior sample (Bernoulli likelihood, bits/dim)"}


def train_zoo_entry(entry, args) -> int:
    """`advlab train fmnist/hvae --profile quick|full [--out DIR] [--threads 1]`: train and save the
    model (the checkpoint goes to DIR/checkpoints with --out, else build/checkpoints; keyed by the config)."""
    from advlab.training.zoo_entry import train_and_save
    return train_and_save(entry, args, HVAEConfig,
                          lambda cfg, checkpoint: train_hvae(cfg, checkpoint=checkpoint),
                          summary=("recon_mse", "elbo_bpd", "kl_per_level", "train_seconds"))


# --------------------------------------------------------------------------------- reports
@torch.no_grad()
def _accuracy(defense, x: torch.Tensor, y: torch.Tensor, k: int = 1, seed: int = 0, chunk: int = 250) -> float:
    """k = 1: the defense as shipped (one draw per call, its own stream reseeded to `seed`);
    k > 1: logits averaged over k draws (a generator seeded by seed + 1), the paper's evaluation."""
    if k == 1:
        defense.reseed(seed)
        pred = torch.cat([defense(x[i:i + chunk]).argmax(1) for i in range(0, len(x), chunk)])
    else:
        g = torch.Generator().manual_seed(seed + 1)
        pred = torch.cat([defense.mean_logits(x[i:i + chunk], k, g).argmax(1) for i in range(0, len(x), chunk)])
    return round((pred == y).float().mean().item(), 4)


def purification_report(n: int = 1000, seed: int = 0, val_n: int = 1000, k: int = 32,
                        classifiers=("fmnist/cnn", "fmnist/pgd-at"), scales=(1.0, 0.7), temperature: float = 0.6,
                        eps: float = 0.1, alpha: float = 0.01, steps: int = 40, device: str = "cpu",
                        command: str | None = None, log=print) -> dict:
    """Clean and grey-box accuracy of MLVGM purification with zoo fmnist/hvae on Fashion-MNIST.

    Images: data.batch("fashion_mnist", "test", n + val_n, seed); the first n are the fixed test subset
    (= data.batch(..., n, seed)), the other val_n the validation images (disjoint from it) on which the
    classifier and the scale are chosen. Grey box: PGD-`steps` (Linf eps, step alpha, random start) crafted
    on the classifier alone, then purified. Per schedule (linear, cosine, learned when its record exists):
      validation  every classifier x scale, one draw (the defense as shipped, seed 0)
      test        the same grid, one draw; and for the configuration chosen on validation (highest mean of
                  clean and grey-box accuracy over the schedules) logits averaged over k draws
    plus, on validation, which level carries the class: all a = 0, then one level at a time at a = 1.
    No adaptive attack here (the honest-evaluation ensemble's job).
    """
    import time
    from advlab import data, zoo
    from advlab.attacks import presets
    from advlab.purifiers.mlvgm import schedules
    from advlab.purifiers.mlvgm.purifier import MLVGM
    from advlab.training.loop import resolve_device
    dev = resolve_device(device)
    t_start = time.time()
    hvae = zoo.load("fmnist/hvae", device=dev)
    x_all, y_all = data.batch("fashion_mnist", "test", n=n + val_n, seed=seed, device=dev)
    sets = {"test": (x_all[:n], y_all[:n]), "val": (x_all[n:], y_all[n:])}
    names = [s for s in schedules.NAMES if s != "learned" or schedules.LEARNED_FILE.exists()]
    attack = presets.pgd(eps, steps=steps, alpha=alpha, seed=seed)
    clfs, adv, alone = {}, {}, {}
    for c in classifiers:
        clfs[c] = zoo.load(c, device=dev)
        for split, (x, y) in sets.items():
            t0 = time.time()
            adv[c, split] = attack(clfs[c], x, y)
            with torch.no_grad():
                alone[c, split] = {"clean": round((clfs[c](x).argmax(1) == y).float().mean().item(), 4),
                                   "grey_box": round((clfs[c](adv[c, split]).argmax(1) == y).float().mean().item(), 4)}
            log(f"{c} alone on {split}: {alone[c, split]} (PGD {time.time() - t0:.0f} s)")

    def defense(c, schedule, scale):
        return MLVGM(hvae, clfs[c], alphas=schedule, scale=scale, temperature=temperature, seed=0).eval()

    grid = []
    for c in classifiers:
        for schedule in names:
            for scale in scales:
                row = {"classifier": c, "schedule": schedule, "scale": scale,
                       "alphas": [round(float(a), 4) for a in schedules.resolve(schedule, hvae.n_levels, scale)]}
                d = defense(c, schedule, scale)
                for split, (x, y) in sets.items():
                    row[split] = {"clean": _accuracy(d, x, y), "grey_box": _accuracy(d, adv[c, split], y)}
                grid.append(row)
                log(f"{c} {schedule} x{scale}: val {row['val']}, test {row['test']}")

    def score(c, scale):   # mean over the schedules of (clean + grey box) / 2 on validation
        rows = [r for r in grid if r["classifier"] == c and r["scale"] == scale]
        return sum(r["val"]["clean"] + r["val"]["grey_box"] for r in rows) / (2 * len(rows))
    chosen_c, chosen_scale = max(((c, s) for c in classifiers for s in scales), key=lambda cs: score(*cs))
    log(f"chosen on validation: {chosen_c}, scale {chosen_scale}")
    eot_rows = []
    for schedule in names:
        d = defense(chosen_c, schedule, chosen_scale)
        x, y = sets["test"]
        t0 = time.time()
        row = {"schedule": schedule, "k": k, "clean": _accuracy(d, x, y, k=k, seed=seed),
               "grey_box": _accuracy(d, adv[chosen_c, "test"], y, k=k, seed=seed)}
        row["seconds"] = round(time.time() - t0, 1)
        eot_rows.append(row)
        log(f"test, {k} draws averaged, {schedule}: {row}")
    levels = []
    x, y = sets["val"]
    clf = clfs[chosen_c]
    for a in ([0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]):
        levels.append({"alphas": a, "clean_val": _accuracy(MLVGM(hvae, clf, alphas=a, temperature=temperature), x, y)})
    with torch.no_grad():                                  # purify throughput, after a warm-up call
        d = defense(chosen_c, "linear", chosen_scale)
        d.purify(sets["test"][0][:8])
        t0 = time.time()
        d.purify(sets["test"][0][:256])
        speed = 256 / (time.time() - t0)
    rec = zoo.info("fmnist/hvae")
    learned = schedules.load_learned() if "learned" in names else None
    return {
        "purifier": "MLVGM (advlab.purifiers.mlvgm)", "hvae": {"sha256": rec["sha256"], "command": rec.get("command"),
                                                               "device": rec.get("device"), "metrics": {
            key: rec.get("metrics", {}).get(key) for key in ("iters", "train_seconds", "recon_mse", "elbo_bpd",
                                                             "kl_per_level", "params")}},
        "classifiers": {c: zoo.info(c)["sha256"] for c in classifiers},
        "test_subset": {"dataset": "fashion_mnist", "split": "test", "n": n, "seed": seed},
        "validation": {"dataset": "fashion_mnist", "split": "test", "images": f"data.batch('fashion_mnist', 'test', "
                       f"n={n + val_n}, seed={seed})[{n}:]", "n": val_n},
        "temperature": temperature, "grey_box_attack": repr(attack), "classifier_alone":
            {f"{c} {split}": v for (c, split), v in alone.items()},
        "grid": grid, "chosen": {"classifier": chosen_c, "scale": chosen_scale,
                                 "rule": "highest mean of clean and grey-box accuracy on validation, over the schedules"},
        "eot": eot_rows, "levels_val": levels,
        "learned_schedule": None if learned is None else {k2: learned.get(k2) for k2 in ("alphas", "objective", "sizes", "method")},
        "purify_images_per_s": round(speed, 1), "device": device_name(dev, cpu_model=True),
        "seconds": round(time.time() - t_start, 1), "command": command,
    }


def format_report(rep: dict) -> str:
    """The purification report as markdown."""
    pct = lambda v: f"{100 * v:.1f}%"   # noqa: E731
    ch = rep["chosen"]
    n, nv = rep["test_subset"]["n"], rep["validation"]["n"]
    h = rep["hvae"]
    lines = [f"# MLVGM purification on Fashion-MNIST: clean and grey box ({n} test images, seed "
             f"{rep['test_subset']['seed']})", "",
             "Method: Serez, Cristani, Del Bue, Murino & Morerio, \"Pre-trained Multiple Latent Variable Generative "
             "Models are good defenders against Adversarial Attacks\"; our own three-level hierarchical VAE "
             "(zoo `fmnist/hvae`, trained with `" + str(h["command"]) + f"` on {h['device']}).  ",
             f"Grey box: `{rep['grey_box_attack']}` crafted on the classifier alone, then purified.  ",
             f"Temperature {rep['temperature']}. Device: {rep['device']}. Command: `{rep['command']}` "
             f"({rep['seconds']:.0f} s).", "",
             f"## The defense on the {n} test images", "",
             f"Classifier `{ch['classifier']}` and scale {ch['scale']}, chosen on the {nv} validation images "
             f"({ch['rule']}).", "",
             "| schedule | alphas (coarsest first) | clean, 1 draw | grey box, 1 draw | "
             f"clean, {rep['eot'][0]['k']} draws averaged | grey box, {rep['eot'][0]['k']} draws averaged |",
             "|---|---|---|---|---|---|"]
    for e in rep["eot"]:
        r = next(g for g in rep["grid"] if g["classifier"] == ch["classifier"] and g["scale"] == ch["scale"]
                 and g["schedule"] == e["schedule"])
        lines.append(f"| {e['schedule']} | {r['alphas']} | {pct(r['test']['clean'])} | {pct(r['test']['grey_box'])} | "
                     f"**{pct(e['clean'])}** | **{pct(e['grey_box'])}** |")
    lines += ["", "Classifiers alone:", "", "| classifier | split | clean | grey box |", "|---|---|---|---|"]
    for key, v in rep["classifier_alone"].items():
        c, split = key.rsplit(" ", 1)
        lines.append(f"| {c} | {split} | {pct(v['clean'])} | {pct(v['grey_box'])} |")
    lines += ["", "## Every classifier x schedule x scale (one draw)", "",
              "| classifier | schedule | scale | alphas | validation clean | validation grey box | test clean | test grey box |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rep["grid"]:
        lines.append(f"| {r['classifier']} | {r['schedule']} | {r['scale']} | {r['alphas']} | {pct(r['val']['clean'])} | "
                     f"{pct(r['val']['grey_box'])} | {pct(r['test']['clean'])} | {pct(r['test']['grey_box'])} |")
    lines += ["", f"## Which level carries the class (validation, clean, `{ch['classifier']}`, one draw)", "",
              "| alphas (4x4, 7x7, 14x14) | clean |", "|---|---|"]
    lines += [f"| {lv['alphas']} | {pct(lv['clean_val'])} |" for lv in rep["levels_val"]]
    ls = rep.get("learned_schedule")
    if ls:
        lines += ["", f"Learned schedule: alphas {ls['alphas']} (objective {ls['objective']:.4f}; sizes {ls['sizes']}; "
                  f"{ls['method']}); search in docs/results/mlvgm_schedule_search.json."]
    hm = h["metrics"]
    lines += ["", f"HVAE: {hm['params']} parameters, {hm['iters']} iterations in {hm['train_seconds']} s; "
              f"test recon MSE {hm['recon_mse']}, ELBO {hm['elbo_bpd']} bits/dim, KL per level {hm['kl_per_level']} "
              "nats (4x4, 7x7, 14x14).  ",
              f"Purify: {rep['purify_images_per_s']} images/s ({rep['device']}).", "",
              "No adaptive attack is reported here: the grey-box rows attack the classifier alone and say nothing "
              "about an attacker who differentiates through the purifier (`MLVGM.adaptive_model()`, exact gradients, "
              "with EoT).", ""]
    return "\n".join(lines)


@torch.no_grad()
def hvae_report(n: int = 1000, seed: int = 0, n_samples: int = 1000, classifier: str = "fmnist/cnn",
                device: str = "cpu", command: str | None = None) -> dict:
    """What the trained fmnist/hvae is: its training record (command, device, time, history), and on the
    fixed test subset data.batch("fashion_mnist", "test", n, seed): reconstruction error, ELBO (bits/dim),
    KL per level, the classifier's accuracy on the reconstructions from posterior means, and the class
    histogram and mean confidence of the classifier on n_samples ancestral samples at temperatures 0.6 and 1."""
    import time
    from advlab import data, zoo
    from advlab.training.loop import resolve_device
    dev = resolve_device(device)
    t0 = time.time()
    rec = zoo.info("fmnist/hvae")
    model = zoo.load("fmnist/hvae", device=dev)
    clf = zoo.load(classifier, device=dev)
    cfg = HVAEConfig(**{k: v for k, v in rec["config"].items() if k in HVAEConfig.__dataclass_fields__})
    cfg.eval_n, cfg.seed = n, seed
    metrics = evaluation_metrics(model, cfg)
    x, y = data.batch("fashion_mnist", "test", n=n, seed=seed, device=dev)
    rec_x = torch.cat([model.reconstruct(x[i:i + 250]) for i in range(0, n, 250)])
    acc = lambda inputs: round((clf(inputs).argmax(1) == y).float().mean().item(), 4)   # noqa: E731
    samples = {}
    for t in (0.6, 1.0):
        g = torch.Generator().manual_seed(seed)
        s = torch.cat([model.sample(min(250, n_samples - i), t, g) for i in range(0, n_samples, 250)])
        p = torch.softmax(clf(s), 1)
        samples[str(t)] = {"class_histogram": torch.bincount(p.argmax(1), minlength=p.shape[1]).tolist(),
                           "mean_max_prob": round(p.max(1).values.mean().item(), 4)}
    hist = rec["metrics"].get("history", [])
    every = max(1, len(hist) // 14)
    return {"model": "fmnist/hvae", "sha256": rec["sha256"], "command": rec.get("command"), "device": rec.get("device"),
            "date": rec.get("date"), "config": rec["config"],
            "training": {k: rec["metrics"].get(k) for k in ("iters", "train_seconds", "params", "weights")}
            | {"calls": max((h["call"] for h in hist if "call" in h), default=None)},   # None: trained before calls were counted
            "test_subset": {"n": n, "seed": seed}, "metrics": metrics,
            "classifier": classifier, "classifier_on_test": acc(x), "classifier_on_reconstructions": acc(rec_x),
            "samples": samples, "history_excerpt": hist[every - 1::every] + (hist[-1:] if len(hist) % every else []),
            "report_device": device_name(dev, cpu_model=True), "report_seconds": round(time.time() - t0, 1), "report_command": command}


def format_hvae_report(rep: dict) -> str:
    """The markdown report of fmnist/hvae (metrics, training, samples) from `hvae_report`'s dict."""
    m, t = rep["metrics"], rep["training"]
    lines = ["# fmnist/hvae: the hierarchical VAE of MLVGM purification", "",
             "A three-level hierarchical VAE (latent maps 4x4, 7x7, 14x14; residual posteriors; Bernoulli likelihood) "
             "for the purification of Serez, Cristani, Del Bue, Murino & Morerio, \"Pre-trained Multiple Latent "
             "Variable Generative Models are good defenders against Adversarial Attacks\" "
             "(advlab.purifiers.mlvgm.model).", "",
             f"Trained with `{rep['command']}` on {rep['device']} ({rep['date']}): {t['iters']} iterations of "
             f"{rep['config']['batch_size']}, {t['train_seconds']} s wall clock "
             + (f"over {t['calls']} call(s), " if t.get("calls") else "in the last (resumed) call, ")
             + f"{t['params']} "
             f"parameters, {t['weights']} weights saved.", "",
             f"## On {rep['test_subset']['n']} test images (seed {rep['test_subset']['seed']})", "",
             "| metric | value |", "|---|---|",
             f"| reconstruction MSE per pixel (posterior means) | {m['recon_mse']} |",
             f"| negative ELBO, bits/dim (one posterior sample, Bernoulli) | {m['elbo_bpd']} |",
             f"| KL per level, nats per image (4x4, 7x7, 14x14) | {m['kl_per_level']} |",
             f"| KL per latent coordinate (4x4, 7x7, 14x14) | {m['kl_per_dim']} |",
             f"| `{rep['classifier']}` on the images | {100 * rep['classifier_on_test']:.1f}% |",
             f"| `{rep['classifier']}` on their reconstructions (all a = 0) | {100 * rep['classifier_on_reconstructions']:.1f}% |",
             "", f"## Samples, classified by `{rep['classifier']}`", "",
             "| temperature | class histogram (10 classes) | mean max probability |", "|---|---|---|"]
    for temp, s in rep["samples"].items():
        lines.append(f"| {temp} | {s['class_histogram']} | {s['mean_max_prob']} |")
    lines += ["", "## Training history (excerpt)", "", "| iter | loss | recon | KL 4x4 | KL 7x7 | KL 14x14 | bits/dim | beta | seconds |",
              "|---|---|---|---|---|---|---|---|---|"]
    for h in rep["history_excerpt"]:
        lines.append(f"| {h['iter']} | {h['loss']:.1f} | {h['recon']:.1f} | {h['kl1']:.1f} | {h['kl2']:.1f} | "
                     f"{h['kl3']:.1f} | {h['bpd']:.4f} | {h['beta']:.2f} | {h['seconds']} |")
    lines += ["", f"Report: `{rep['report_command']}` on {rep['report_device']} ({rep['report_seconds']} s).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    """python -m advlab.purifiers.mlvgm.train report|hvae-report [--n 1000] [--seed 0] [--k 32] [--threads 1] [--out docs/results]"""
    import argparse
    import json
    import shlex
    import sys
    p = argparse.ArgumentParser(prog="python -m advlab.purifiers.mlvgm.train", description=main.__doc__)
    p.add_argument("action", choices=("report", "hvae-report"))
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--val-n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="docs/results")
    args = p.parse_args(argv)
    if min(args.n, args.val_n, args.k) < 1:
        p.error("--n, --val-n and --k must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python -m advlab.purifiers.mlvgm.train " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    from advlab.zoo import atomic
    if args.action == "hvae-report":
        rep = hvae_report(n=args.n, seed=args.seed, device=args.device, command=command)
        out = Path(args.out) / "hvae_fmnist"
        text = format_hvae_report(rep)
    else:
        rep = purification_report(n=args.n, seed=args.seed, val_n=args.val_n, k=args.k, device=args.device,
                                  command=command)
        out = Path(args.out) / f"mlvgm_fmnist_n{args.n}_seed{args.seed}"
        text = format_report(rep)
    atomic.write_text(out.with_suffix(".json"), json.dumps(rep, indent=1) + "\n")
    atomic.write_text(out.with_suffix(".md"), text)
    print(text)
    print(f"written: {out}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
