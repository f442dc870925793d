"""Interpolation schedules of MLVGM purification (Serez, Cristani, Del Bue, Murino & Morerio, "Pre-trained
Multiple Latent Variable Generative Models are good defenders against Adversarial Attacks"): the weight
a_i of the prior sample at level i (i = 1..n, level 1 the coarsest), and the Bayesian-optimisation search
of the learned schedule.

    linear(3)            [1/3, 2/3, 1]            a_i = i / n
    cosine(3)            [0.25, 0.75, 1]          a_i = (1 - cos(pi i / n)) / 2
    resolve("linear", 3, scale=0.7)               every a_i times 0.7 (the paper's option)
    resolve("learned", 3)                         the alphas recorded by `search` (LEARNED_FILE)

The learned schedule (the paper's objective and search, shrunk for a CPU; the sizes are arguments and
are recorded with the result):
  1. n_images TRAINING images (data.batch(dataset, "train", n, seed)); single-step L2 FGSM (eps_l2,
     the dataset's default 1.5 for Fashion-MNIST) crafted against the reconstruction-only pipeline
     classifier(decode_mixed(x, a = 0)); keep the adversaries that fool it.
  2. objective(a) = accuracy of classifier on decode_mixed(x_adv, a, temperature), logits averaged over
     `eot` draws (the same seeded draws for every candidate: common random numbers, so candidates are
     compared on equal noise).
  3. Bayesian optimisation over [0, 1]^n: 5 starting points (linear, cosine, all 0.5, 1 - linear,
     1 - cosine), then `steps` steps, each fitting a Gaussian process (BoTorch's SingleTaskGP, Matern 5/2
     with ARD, standardised outcomes) to all evaluations and evaluating the maximiser of its expected
     improvement (BoTorch's LogExpectedImprovement: the same maximiser as EI, numerically stable).
     The learned alphas are the best evaluated point.
BoTorch is an optional extra: `pip install 'advlab[mlvgm]'` (only the search needs it; loading the
recorded alphas does not). `python -m advlab.purifiers.mlvgm.schedules search --help`.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

def _learned_file() -> Path:
    from advlab import resources
    try:
        return resources.results_dir() / "mlvgm_schedule_search.json"
    except FileNotFoundError:
        return Path("docs") / "results" / "mlvgm_schedule_search.json"


LEARNED_FILE = _learned_file()   # the checkout's docs/results, or the wheel's copy
NAMES = ("linear", "cosine", "learned")


def linear(n: int) -> torch.Tensor:
    """a_i = i / n, i = 1..n (level 1 the coarsest): (n,)."""
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return (i / n).float()


def cosine(n: int) -> torch.Tensor:
    """a_i = (1 - cos(pi i / n)) / 2, i = 1..n: (n,)."""
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return ((1 - torch.cos(math.pi * i / n)) / 2).float()


def starting_points(n: int) -> list[torch.Tensor]:
    """The search's five starting points: linear, cosine, all 0.5, 1 - linear, 1 - cosine."""
    return [linear(n), cosine(n), torch.full((n,), 0.5), 1 - linear(n), 1 - cosine(n)]


def load_learned(path: str | Path | None = None, n: int | None = None) -> dict:
    """The recorded search (json written by `search`); FileNotFoundError naming the command that writes it."""
    path = Path(path) if path is not None else LEARNED_FILE
    if not path.exists():
        raise FileNotFoundError(f"alphas: no learned schedule at {path}; run the search first: "
                                "python -m advlab.purifiers.mlvgm.schedules search (needs the extra: "
                                "pip install 'advlab[mlvgm]')")
    rec = json.loads(path.read_text())
    if n is not None and len(rec["alphas"]) != n:
        raise ValueError(f"alphas: the learned schedule in {path} has {len(rec['alphas'])} levels, the model {n}")
    return rec


def resolve(alphas, n: int, scale: float = 1.0, path: str | Path | None = None) -> torch.Tensor:
    """The alphas (n,) float32 in [0, 1] that a schedule name or a given sequence/tensor means, times scale."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or not 0 <= scale <= 1:
        raise ValueError(f"scale: must be a number in [0, 1], got {scale!r}")
    if isinstance(alphas, str):
        if alphas == "linear":
            a = linear(n)
        elif alphas == "cosine":
            a = cosine(n)
        elif alphas == "learned":
            a = torch.tensor(load_learned(path, n)["alphas"], dtype=torch.float32)
        else:
            raise ValueError(f"alphas: must be one of {NAMES} or {n} numbers in [0, 1], got {alphas!r}")
    else:
        try:
            a = torch.as_tensor(alphas.detach().cpu() if isinstance(alphas, torch.Tensor) else alphas,
                                dtype=torch.float32).clone()
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"alphas: must be one of {NAMES} or {n} numbers in [0, 1], got {alphas!r}") from None
    if a.shape != (n,) or not torch.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise ValueError(f"alphas: expected {n} numbers in [0, 1] (one per level, coarsest first), got {a.tolist()}")
    return a * float(scale)


# --------------------------------------------------------------------------------- the learned schedule
def _botorch():
    try:
        import botorch  # noqa: F401
    except ImportError:
        raise ImportError("the learned-schedule search needs BoTorch, an optional extra of advlab: "
                          "pip install 'advlab[mlvgm]' (or pip install botorch)") from None
    import botorch
    return botorch


def fooling_set(hvae, classifier, x: torch.Tensor, y: torch.Tensor, eps_l2: float = 1.5,
                temperature: float = 0.6, chunk: int = 250) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Step 1 of the search: single-step L2 FGSM adversaries of x against the reconstruction-only pipeline
    classifier(decode_mixed(., a = 0)), and the ones that fool it: (x_adv kept, y kept, counts)."""
    from advlab.attacks import FGSM
    from advlab.purifiers.mlvgm.purifier import MLVGM
    zero = MLVGM(hvae, classifier, alphas=[0.0] * hvae.n_levels, temperature=temperature, seed=0).eval()
    atk = FGSM(eps=eps_l2, norm="l2")
    xs, ys, fooled, correct = [], [], 0, 0
    for i in range(0, len(x), chunk):
        xc, yc = x[i:i + chunk], y[i:i + chunk]
        xa = atk(zero, xc, yc)
        with torch.no_grad():
            ok = zero(xc).argmax(1) == yc
            fool = zero(xa).argmax(1) != yc
        correct += int(ok.sum())
        fooled += int(fool.sum())
        xs.append(xa[fool])
        ys.append(yc[fool])
    return torch.cat(xs), torch.cat(ys), {"n": len(x), "clean_correct_a0": correct, "fooled_a0": fooled,
                                          "attack": repr(atk)}


@torch.no_grad()
def eot_accuracy(hvae, classifier, x: torch.Tensor, y: torch.Tensor, alphas: torch.Tensor, temperature: float,
                 eot: int, seed: int, chunk: int = 500) -> float:
    """Accuracy of classifier on decode_mixed(x, alphas, temperature), logits averaged over `eot` draws;
    the draws come from a generator seeded by `seed` (the same draws for every alphas)."""
    g = torch.Generator().manual_seed(seed)
    logits = 0
    for _ in range(eot):
        logits = logits + torch.cat([classifier(hvae.decode_mixed(x[i:i + chunk], alphas, temperature, g))
                                     for i in range(0, len(x), chunk)])
    return (logits.argmax(1) == y).float().mean().item()


def bayes_opt(objective, n: int, steps: int, seed: int = 0, starts: list[torch.Tensor] | None = None,
              log=print) -> list[dict]:
    """Maximise objective(alphas (n,)) -> float over [0, 1]^n: the starting points (default
    `starting_points(n)`), then `steps` BoTorch steps (SingleTaskGP + LogExpectedImprovement, maximised by
    optimize_acqf with 10 restarts from 256 raw samples). Returns the history, one dict per evaluation."""
    _botorch()
    from botorch.acquisition import LogExpectedImprovement
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms import Standardize
    from botorch.optim import optimize_acqf
    from gpytorch.mlls import ExactMarginalLogLikelihood
    starts = starting_points(n) if starts is None else starts
    history = []

    def evaluate(a: torch.Tensor, kind: str) -> None:
        a = a.detach().double().clamp(0, 1)
        t0 = time.time()
        v = float(objective(a.float()))
        history.append({"step": len(history), "kind": kind, "alphas": [round(float(t), 5) for t in a],
                        "objective": v, "seconds": round(time.time() - t0, 1)})
        log(f"  {len(history) - 1:3d} {kind:6s} alphas {[round(float(t), 3) for t in a]} -> {v:.4f}")

    for a in starts:
        evaluate(a, "start")
    bounds = torch.stack([torch.zeros(n), torch.ones(n)]).double()
    for step in range(steps):
        X = torch.tensor([h["alphas"] for h in history], dtype=torch.float64)
        Y = torch.tensor([[h["objective"]] for h in history], dtype=torch.float64)
        torch.manual_seed(seed + step)
        gp = SingleTaskGP(X, Y, outcome_transform=Standardize(m=1))
        fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
        acq = LogExpectedImprovement(gp, best_f=Y.max())
        cand, _ = optimize_acqf(acq, bounds=bounds, q=1, num_restarts=10, raw_samples=256)
        evaluate(cand[0], "bo")
    return history


def search(hvae=None, classifier=None, classifier_name: str = "fmnist/cnn", dataset: str = "fashion_mnist",
           n_images: int = 1000, seed: int = 0,
           eps_l2: float = 1.5, eot: int = 8, steps: int = 25, temperature: float = 0.6,
           out: str | Path | None = LEARNED_FILE, command: str | None = None, log=print) -> dict:
    """The learned schedule (module docstring): fooling set, then Bayesian optimisation; writes the
    record (alphas, history, sizes, models) to `out` (None: not written) and returns it."""
    from advlab import data, zoo
    from advlab.validate import eval_mode
    _botorch()
    if hvae is None:
        hvae = zoo.load("fmnist/hvae")
    if classifier is None:
        classifier = zoo.load(classifier_name)
    t0 = time.time()
    x, y = data.batch(dataset, "train", n=n_images, seed=seed)
    with eval_mode(hvae), eval_mode(classifier):
        x_adv, y_adv, counts = fooling_set(hvae, classifier, x, y, eps_l2, temperature)
        log(f"fooling set: {len(x_adv)} of {n_images} training images fool the a = 0 pipeline "
            f"({counts['attack']}), {time.time() - t0:.0f} s")
        if len(x_adv) == 0:
            raise RuntimeError(f"eps_l2: no adversary of the {n_images} images fools the a = 0 pipeline at L2 "
                               f"{eps_l2}; the objective would be empty (raise eps_l2 or n_images)")
        history = bayes_opt(lambda a: eot_accuracy(hvae, classifier, x_adv, y_adv, a, temperature, eot, seed + 1),
                            hvae.n_levels, steps, seed, log=log)
    best = max(history, key=lambda h: h["objective"])
    shas = {}
    for name in ("fmnist/hvae", classifier_name):
        try:
            shas[name] = zoo.info(name)["sha256"]
        except Exception:   # noqa: BLE001 -- models given directly (tests): no zoo record
            shas[name] = None
    import botorch
    rec = {"alphas": best["alphas"], "objective": best["objective"], "best_step": best["step"],
           "method": f"BoTorch {botorch.__version__}: SingleTaskGP (Matern 5/2, ARD, standardised outcome) + "
                     f"LogExpectedImprovement, optimize_acqf (10 restarts, 256 raw samples)",
           "objective_definition": "accuracy (logits averaged over eot draws, temperature T, fixed draws) on the "
                                   "training images whose single-step L2 FGSM adversary, crafted on the a = 0 "
                                   "pipeline, fools that pipeline",
           "sizes": {"n_images": n_images, "fooling": len(x_adv), "eot": eot, "starting_points": 5, "steps": steps,
                     "paper": {"n_images": "~1000", "eot": 32, "steps": 95}},
           "dataset": dataset, "temperature": temperature, "eps_l2": eps_l2, "seed": seed, "fooling_counts": counts,
           "classifier": classifier_name, "models": shas, "seconds": round(time.time() - t0, 1),
           "command": command, "history": history}
    if out is not None:
        from advlab.zoo import atomic
        atomic.write_text(Path(out), json.dumps(rec, indent=1) + "\n")
        log(f"written: {out}")
    return rec


def main(argv=None) -> int:
    """python -m advlab.purifiers.mlvgm.schedules search [--n 1000] [--eot 8] [--steps 25] [--threads 1]"""
    import argparse
    import shlex
    import sys
    p = argparse.ArgumentParser(prog="python -m advlab.purifiers.mlvgm.schedules", description=main.__doc__)
    p.add_argument("action", choices=("search",))
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--eot", type=int, default=8)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eps-l2", type=float, default=1.5)
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--classifier", default="fmnist/cnn")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=str(LEARNED_FILE))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python -m advlab.purifiers.mlvgm.schedules " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    search(classifier_name=args.classifier, n_images=args.n, seed=args.seed, eps_l2=args.eps_l2, eot=args.eot,
           steps=args.steps, temperature=args.temperature, out=args.out, command=command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
