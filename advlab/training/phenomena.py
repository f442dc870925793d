"""The recorded runs behind lecture 03's trade-off and catastrophic-overfitting sections.

    python -m advlab.training.phenomena [--threads 1]      # about 45 min on one CPU thread
    rec = json.loads(Path("docs/results/at_phenomena.json").read_text())

A live run in the lecture's quick profile (2000 images, 1 epoch) is too short to show either effect:
its TRADES beta = 1 model beat standard training on both axes, and its FGSM-AT curve never collapsed.
This module trains the same SmallCNN at a size where both show, and records what it measured:

- **frontier**: standard training, PGD-AT at several training eps and TRADES at several beta (eps 0.1),
  each on `n_train` training images for `epochs` epochs with PGD-`steps` inside, then clean accuracy and
  PGD-`eval_steps` accuracy (random start, step 2.5 eps / steps, Linf eps 0.1) on `n_eval` test images;
- **overfitting**: FGSM-AT at Linf `co_eps` started at x with a step of eps (Goodfellow et al.'s recipe)
  and with a random start and a step of 1.25 eps (Wong et al.), each monitored every `co_every` steps on
  `co_monitor` held-out test images (clean, FGSM, PGD-`co_pgd`), with the step the monitor flagged.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from advlab.training.adversarial import ATConfig, adversarial_train

__all__ = ["PhenomenaConfig", "QUICK", "frontier", "overfitting", "run"]


@dataclass
class PhenomenaConfig:
    n_train: int = 10000          # training images of every frontier model
    epochs: int = 3
    steps: int = 5                # PGD steps inside PGD-AT and TRADES (step 2.5 eps / steps)
    eps: float = 0.1              # the evaluation budget, and TRADES' training budget
    sweep_eps: list = field(default_factory=lambda: [0.05, 0.1, 0.15, 0.2])    # PGD-AT training budgets
    sweep_beta: list = field(default_factory=lambda: [1.0, 3.0, 6.0])          # TRADES betas
    n_eval: int = 1000            # test images (seed `seed`) of the frontier's evaluation
    eval_steps: int = 20
    co_eps: float = 0.2           # catastrophic overfitting: the FGSM-AT budget
    co_train: int = 20000
    co_epochs: int = 3
    co_every: int = 20            # optimiser steps between monitor checks
    co_monitor: int = 512
    co_pgd: int = 10
    seed: int = 0
    device: str = "cpu"


QUICK = PhenomenaConfig(n_train=256, epochs=1, steps=1, sweep_eps=[0.1], sweep_beta=[6.0], n_eval=64, eval_steps=2,
                        co_train=256, co_epochs=1, co_every=1, co_monitor=32, co_pgd=2)   # for tests


def _common(cfg: PhenomenaConfig) -> dict:
    """The settings every training here shares (TrainConfig's fields; ATConfig adds monitor_n)."""
    return dict(arch="cnn", dataset="fashion_mnist", n_test=500, device=cfg.device, seed=cfg.seed)


def frontier(cfg: PhenomenaConfig, progress: bool = True) -> list[dict]:
    """One point per model: {"label", "method", "train_eps", "beta", "clean_acc", "pgd_acc", "seconds"}."""
    from advlab import attacks, data
    from advlab.metrics import accuracy, robust_accuracy
    x, y = data.batch("fashion_mnist", split="test", n=cfg.n_eval, seed=cfg.seed, device=cfg.device)
    pgd = attacks.PGD(eps=cfg.eps, alpha=2.5 * cfg.eps / cfg.eval_steps, steps=cfg.eval_steps, random_start=True,
                      seed=cfg.seed)
    runs = [("standard (eps 0)", "pgd", 0.0, None)]
    runs += [(f"PGD-AT eps {e:g}", "pgd", float(e), None) for e in cfg.sweep_eps]
    runs += [(f"TRADES beta {b:g}", "trades", cfg.eps, float(b)) for b in cfg.sweep_beta]
    points = []
    for label, method, train_eps, beta in runs:
        t0 = time.perf_counter()
        kw = dict(_common(cfg), n_train=cfg.n_train, epochs=cfg.epochs)
        if train_eps == 0.0:
            from advlab.training.loop import TrainConfig, train
            model, _ = train(TrainConfig(**kw), progress=False)
        else:
            extra = {"beta": beta} if beta is not None else {}
            model, _ = adversarial_train(ATConfig(method=method, eps=train_eps, steps=cfg.steps, monitor_n=0, **kw,
                                                  **extra), progress=False)
        model.eval()
        point = {"label": label, "method": "standard" if train_eps == 0.0 else method, "train_eps": train_eps,
                 "beta": beta, "clean_acc": round(accuracy(model, x, y), 4),
                 "pgd_acc": round(robust_accuracy(model, x, y, pgd), 4),
                 "seconds": round(time.perf_counter() - t0, 1)}
        points.append(point)
        if progress:
            print(f"frontier: {label:18s} clean {100 * point['clean_acc']:5.1f}%  PGD-{cfg.eval_steps} "
                  f"{100 * point['pgd_acc']:5.1f}%  ({point['seconds']:.0f} s)", flush=True)
    return points


def overfitting(cfg: PhenomenaConfig, progress: bool = True) -> list[dict]:
    """The two FGSM-AT runs: {"label", "random_init", "alpha", "monitor": [...], "flagged_step", "seconds"}."""
    out = []
    for label, random_init, alpha in (("FGSM-AT, start at x, step eps", False, cfg.co_eps),
                                      ("FGSM-AT, random start, step 1.25 eps", True, 1.25 * cfg.co_eps)):
        t0 = time.perf_counter()
        at = ATConfig(method="fgsm", eps=cfg.co_eps, alpha=alpha, random_init=random_init,
                      **dict(_common(cfg), n_train=cfg.co_train, epochs=cfg.co_epochs,
                             monitor_n=cfg.co_monitor),
                      monitor_every=cfg.co_every, monitor_pgd_steps=cfg.co_pgd)
        _, met = adversarial_train(at, progress=False)
        run = {"label": label, "random_init": random_init, "alpha": alpha, "monitor": met["monitor"],
               "flagged_step": met["catastrophic_overfitting_step"], "seconds": round(time.perf_counter() - t0, 1)}
        out.append(run)
        if progress:
            last = met["monitor"][-1] if met["monitor"] else {}
            print(f"overfitting: {label}: flagged at step {run['flagged_step']}; last check clean "
                  f"{100 * last.get('clean_acc', float('nan')):.1f}% FGSM {100 * last.get('fgsm_acc', float('nan')):.1f}% "
                  f"PGD-{cfg.co_pgd} {100 * last.get('pgd_acc', float('nan')):.1f}% ({run['seconds']:.0f} s)", flush=True)
    return out


def run(cfg: PhenomenaConfig, progress: bool = True) -> dict:
    """Both parts, as the record that lecture 03 reads."""
    t0 = time.perf_counter()
    rec = {"config": asdict(cfg), "frontier": frontier(cfg, progress), "overfitting": overfitting(cfg, progress)}
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    return rec


def format_markdown(rec: dict) -> str:
    """The record as the Markdown tables of docs/results/at_phenomena.md."""
    c = rec["config"]
    lines = ["# Adversarial training: the trade-off and catastrophic overfitting (lecture 03's recorded runs)\n",
             f"Command: `{rec['command']}` ({rec['device']}, {rec['seconds'] / 60:.0f} min). SmallCNN; "
             f"{c['n_train']} training images, {c['epochs']} epochs, PGD-{c['steps']} inside; evaluated on "
             f"{c['n_eval']} test images (seed {c['seed']}) under PGD-{c['eval_steps']} at Linf {c['eps']}.\n",
             "| model | clean | PGD | seconds |", "|---|---:|---:|---:|"]
    lines += [f"| {p['label']} | {100 * p['clean_acc']:.1f}% | {100 * p['pgd_acc']:.1f}% | {p['seconds']:.0f} |"
              for p in rec["frontier"]]
    lines.append(f"\nFGSM-AT at Linf {c['co_eps']} on {c['co_train']} images, {c['co_epochs']} epochs; monitor every "
                 f"{c['co_every']} steps on {c['co_monitor']} held-out images (PGD-{c['co_pgd']}):\n")
    lines += ["| run | flagged at step | best PGD (step) | last check: clean / FGSM / PGD |", "|---|---:|---|---|"]
    for r in rec["overfitting"]:
        best = max(r["monitor"], key=lambda m: m["pgd_acc"])
        last = r["monitor"][-1]
        flagged = "not flagged" if r["flagged_step"] is None else r["flagged_step"]
        lines.append(f"| {r['label']} | {flagged} | {100 * best['pgd_acc']:.1f}% ({best['step']}) | "
                     f"{100 * last['clean_acc']:.1f}% / {100 * last['fgsm_acc']:.1f}% / {100 * last['pgd_acc']:.1f}% |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    """The command line of the module docstring; writes docs/results/at_phenomena.{json,md} (or under --out)."""
    import argparse
    import sys

    from advlab.validate import device_name
    from advlab.zoo import atomic

    p = argparse.ArgumentParser(prog="python -m advlab.training.phenomena",
                                description="lecture 03's recorded trade-off frontier and catastrophic-overfitting runs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds), for tests")
    p.add_argument("--out", default="docs/results")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rec = run(QUICK if args.quick else PhenomenaConfig())
    rec["device"] = device_name(torch.device("cpu"), cpu_model=True)
    rec["torch"] = torch.__version__
    rec["command"] = "python -m advlab.training.phenomena " + " ".join(sys.argv[1:] if argv is None else argv)
    atomic.write_report(args.out, "at_phenomena", rec, format_markdown(rec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
