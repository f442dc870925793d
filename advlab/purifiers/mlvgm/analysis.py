"""The analyses of MLVGM purification that lecture 08 shows (Serez, Cristani, Del Bue, Murino & Morerio,
"Pre-trained Multiple Latent Variable Generative Models are good defenders against Adversarial Attacks",
figures 1c, 3a and 3c, at Fashion-MNIST's scale):

    level_study(hvae, clf, x, y)                  which level carries the class: resample one level at a time
    spearman_study(hvae, clf, x_adv, y_adv)       random alpha vectors: accuracy against their Spearman
                                                  correlation with the linear schedule
    l2_curves(defense, x, y, bounds)              attack success rate against the L2 bound (APGD-L2 with EoT
                                                  through the whole defense; the paper's minimal-L2 curves)

`python -m advlab.purifiers.mlvgm.analysis --threads 1` runs all three on the zoo models and writes
docs/results/mlvgm_analysis.{json,md}; the lecture reads that record and runs small versions live.
"""
from __future__ import annotations

import time

import torch

LEVEL_SETTINGS = ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 1.0))


def spearman(a, b) -> float:
    """Spearman rank correlation of two 1-d sequences (Pearson correlation of their ranks; ties get the
    mean of their ranks); nan when either has no spread."""
    def ranks(v):
        v = torch.as_tensor(v, dtype=torch.float64).flatten()
        r = torch.empty_like(v)
        r[v.argsort()] = torch.arange(len(v), dtype=torch.float64)
        for u in v.unique():                                   # ties: mean rank
            m = v == u
            r[m] = r[m].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    if len(ra) != len(rb) or len(ra) < 2:
        raise ValueError(f"a, b: need two sequences of the same length >= 2, got {len(ra)} and {len(rb)}")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = (ra.norm() * rb.norm()).item()
    return float("nan") if den == 0 else float((ra * rb).sum().item() / den)


@torch.no_grad()
def level_study(hvae, classifier, x: torch.Tensor, y: torch.Tensor, temperature: float = 0.6, seed: int = 0,
                settings=LEVEL_SETTINGS, chunk: int = 250) -> list[dict]:
    """Accuracy of classifier on decode_mixed(x, a) for each alphas in `settings` (default: none resampled,
    each level alone resampled, all resampled), one draw per image from a generator seeded by `seed`."""
    out = []
    for a in settings:
        g = torch.Generator().manual_seed(seed)
        alphas = torch.tensor(a, dtype=torch.float32)
        pred = torch.cat([classifier(hvae.decode_mixed(x[i:i + chunk], alphas, temperature, g)).argmax(1)
                          for i in range(0, len(x), chunk)])
        out.append({"alphas": list(a), "acc": round((pred == y).float().mean().item(), 4)})
    return out


def spearman_study(hvae, classifier, x_adv: torch.Tensor, y_adv: torch.Tensor, n_vectors: int = 64, eot: int = 4,
                   temperature: float = 0.6, seed: int = 0, progress: bool = False) -> list[dict]:
    """n_vectors alpha vectors uniform in [0, 1]^n (a generator seeded by `seed`), each scored like the
    learned-schedule search (schedules.eot_accuracy: logits averaged over `eot` draws, the same draws for
    every vector) on (x_adv, y_adv); with each vector's Spearman correlation to the linear schedule."""
    from tqdm.auto import tqdm
    from advlab.purifiers.mlvgm import schedules
    n = hvae.n_levels
    g = torch.Generator().manual_seed(seed)
    lin = schedules.linear(n)
    rows = []
    for _ in tqdm(range(n_vectors), desc="alpha vectors", disable=not progress):
        a = torch.rand(n, generator=g)
        acc = schedules.eot_accuracy(hvae, classifier, x_adv, y_adv, a, temperature, eot, seed + 1)
        rows.append({"alphas": [round(float(t), 4) for t in a], "spearman": round(spearman(a, lin), 4),
                     "acc": round(acc, 4)})
    return rows


def l2_curves(defense, x: torch.Tensor, y: torch.Tensor, bounds=(0.5, 1.0, 1.5, 2.0, 3.0), steps: int = 20,
              eot: int = 4, k: int = 32, seed: int = 0, progress: bool = False) -> dict:
    """Attack success rate against the L2 bound: for each bound, ascending, APGD-CE in the L2 ball
    (`steps`, EoT `eot`, gradients through the whole defense) on the images no smaller bound has broken
    yet; an image is broken when the defense's logits averaged over k draws (a generator seeded by
    seed + 1; deterministic models: one call) misclassify it. Success rate = broken / correctly classified
    clean images, so the curve never falls. Returns bounds, success, clean accuracy, n and the attack."""
    from advlab.attacks import APGD
    from tqdm.auto import tqdm
    from advlab.validate import check_images
    check_images(x, "x")
    bounds = [float(b) for b in bounds]
    if not bounds or any(b <= 0 for b in bounds) or bounds != sorted(bounds):
        raise ValueError(f"bounds: expected ascending positive L2 radii, got {bounds}")
    stochastic = getattr(defense, "stochastic", False)

    @torch.no_grad()
    def predict(inp):
        if stochastic and hasattr(defense, "mean_logits"):
            return defense.mean_logits(inp, k, torch.Generator().manual_seed(seed + 1)).argmax(1)
        return defense(inp).argmax(1)

    correct = predict(x) == y
    broken = torch.zeros_like(correct)
    success, attack = [], None
    for b in tqdm(bounds, desc="L2 bounds", disable=not progress):
        todo = (correct & ~broken).nonzero().flatten()
        if len(todo):
            attack = APGD(eps=b, norm="l2", steps=steps, eot_iter=eot if stochastic else 1, seed=seed)
            if hasattr(defense, "reseed"):
                defense.reseed(seed)
            xa = attack(defense, x[todo], y[todo])
            broken[todo] = predict(xa) != y[todo]
        success.append(round(broken.sum().item() / max(1, correct.sum().item()), 4))
    return {"bounds": bounds, "success": success, "clean_acc": round(correct.float().mean().item(), 4),
            "n": len(x), "n_correct": int(correct.sum()), "k": k if stochastic else 1,
            "attack": f"APGD-CE L2, {steps} steps, EoT {eot if stochastic else 1}, seed {seed}, per bound on the "
                      f"images no smaller bound broke"}


def run(n_curves: int = 100, n_val: int = 1000, n_fooling: int = 1000, n_vectors: int = 64, eot: int = 4,
        steps: int = 20, bounds=(0.5, 1.0, 1.5, 2.0, 3.0), seed: int = 0, classifier_name: str = "fmnist/cnn",
        temperature: float = 0.6, command: str | None = None, log=print) -> dict:
    """The three analyses on the zoo's fmnist/hvae and `classifier_name`: levels on n_val validation images
    (test images after the fixed subset: data.batch("fashion_mnist", "test", 1000 + n_val, seed)[1000:]);
    Spearman on the learned-schedule search's objective set (schedules.fooling_set of n_fooling training
    images); L2 curves on the first n_curves images of the fixed test subset for linear, cosine, learned (when
    recorded) and the classifier alone."""
    from advlab import data, zoo
    from advlab.purifiers.mlvgm import schedules
    from advlab.purifiers.mlvgm.purifier import MLVGM
    from advlab.validate import device_name, eval_mode
    t_start = time.time()
    hvae, clf = zoo.load("fmnist/hvae"), zoo.load(classifier_name)
    x_all, y_all = data.batch("fashion_mnist", "test", n=1000 + n_val, seed=seed)
    with eval_mode(hvae), eval_mode(clf):
        levels = level_study(hvae, clf, x_all[1000:], y_all[1000:], temperature, seed)
        log(f"levels (validation, {n_val}): {levels}")
        xt, yt = data.batch("fashion_mnist", "train", n=n_fooling, seed=seed)
        x_adv, y_adv, counts = schedules.fooling_set(hvae, clf, xt, yt, temperature=temperature)
        t0 = time.time()
        sp = spearman_study(hvae, clf, x_adv, y_adv, n_vectors, eot, temperature, seed, progress=True)
        log(f"spearman study: {n_vectors} vectors on {len(x_adv)} fooling images, {time.time() - t0:.0f} s")
        names = [s for s in schedules.NAMES if s != "learned" or schedules.LEARNED_FILE.exists()]
        x, y = x_all[:n_curves], y_all[:n_curves]
        curves = {}
        for name in names:
            t0 = time.time()
            d = MLVGM(hvae, clf, alphas=name, temperature=temperature, seed=seed).eval()
            curves[name] = l2_curves(d, x, y, bounds, steps, eot, seed=seed, progress=True) | {
                "alphas": [round(float(a), 4) for a in d.alphas], "seconds": round(time.time() - t0, 1)}
            log(f"L2 curve {name}: {curves[name]['success']} ({curves[name]['seconds']} s)")
        curves[f"{classifier_name} alone"] = l2_curves(clf, x, y, bounds, steps, eot, seed=seed)
    return {"hvae": zoo.info("fmnist/hvae")["sha256"], "classifier": classifier_name,
            "classifier_sha256": zoo.info(classifier_name)["sha256"], "temperature": temperature,
            "levels": {"n": n_val, "images": f"data.batch('fashion_mnist', 'test', n={1000 + n_val}, seed={seed})[1000:]",
                       "one_draw_seed": seed, "rows": levels},
            "spearman": {"n_vectors": n_vectors, "eot": eot, "fooling": counts | {"kept": len(x_adv)},
                         "images": f"the training images data.batch('fashion_mnist', 'train', n={n_fooling}, seed={seed}) "
                                   "whose single-step L2 FGSM (1.5) fools the a = 0 pipeline", "rows": sp},
            "curves": {"n": n_curves, "images": f"the first {n_curves} of the fixed test subset (seed {seed})",
                       "bounds": list(bounds), "by_model": curves},
            "paper_sizes": {"curves": ">= 500 images, EoT, several minimal-L2 attacks", "spearman": "64+ vectors"},
            "device": device_name(torch.device("cpu"), cpu_model=True), "threads": torch.get_num_threads(),
            "seconds": round(time.time() - t_start, 1), "command": command}


def format_markdown(rep: dict) -> str:
    """The analysis record as markdown."""
    lines = ["# MLVGM purification on Fashion-MNIST: levels, Spearman, L2 curves", "",
             f"Models: fmnist/hvae ({rep['hvae'][:12]}), classifier `{rep['classifier']}`; temperature "
             f"{rep['temperature']}. `{rep['command']}` on {rep['device']}, {rep['seconds']:.0f} s.", "", f"## Which level carries the class ({rep['levels']['n']} validation "
             "images, one draw)", "", "| alphas (4x4, 7x7, 14x14) | accuracy |", "|---|---:|"]
    lines += [f"| {r['alphas']} | {100 * r['acc']:.1f}% |" for r in rep["levels"]["rows"]]
    sp = rep["spearman"]
    rows = sorted(sp["rows"], key=lambda r: -r["acc"])
    lines += ["", f"## Random alpha vectors ({sp['n_vectors']}, EoT {sp['eot']}, {sp['fooling']['kept']} fooling "
              "training images)", "", f"Spearman correlation with the linear schedule against accuracy: "
              f"{spearman([r['spearman'] for r in sp['rows']], [r['acc'] for r in sp['rows']]):.2f} (rank "
              "correlation of the two columns). Best five:", "", "| alphas | Spearman with linear | accuracy |",
              "|---|---:|---:|"]
    lines += [f"| {r['alphas']} | {r['spearman']:.2f} | {100 * r['acc']:.1f}% |" for r in rows[:5]]
    c = rep["curves"]
    lines += ["", f"## Attack success rate against the L2 bound ({c['n']} test images)", "",
              "| model | clean | " + " | ".join(f"L2 {b:g}" for b in c["bounds"]) + " | attack |",
              "|---|---:|" + "---:|" * len(c["bounds"]) + "---|"]
    for name, r in c["by_model"].items():
        lines.append(f"| {name} | {100 * r['clean_acc']:.1f}% | " + " | ".join(f"{100 * s:.1f}%" for s in r["success"])
                     + f" | {r['attack']} |")
    lines += ["", "Success rate: broken / correctly classified clean images; judged on logits averaged over "
              "32 draws (MLVGM). Smaller than the paper's protocol (>= 500 images, several minimal-L2 attacks): "
              "a CPU run.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    """python -m advlab.purifiers.mlvgm.analysis [--n-curves 100] [--vectors 64] [--eot 4] [--steps 20] [--threads 1]"""
    import argparse
    import shlex
    import sys
    p = argparse.ArgumentParser(prog="python -m advlab.purifiers.mlvgm.analysis", description=main.__doc__)
    p.add_argument("--n-curves", type=int, default=100)
    p.add_argument("--n-val", type=int, default=1000)
    p.add_argument("--vectors", type=int, default=64)
    p.add_argument("--eot", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="docs/results")
    args = p.parse_args(argv)
    if min(args.n_curves, args.n_val, args.vectors, args.eot, args.steps) < 1:
        p.error("--n-curves, --n-val, --vectors, --eot and --steps must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python -m advlab.purifiers.mlvgm.analysis " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    rep = run(n_curves=args.n_curves, n_val=args.n_val, n_vectors=args.vectors, eot=args.eot, steps=args.steps,
              seed=args.seed, command=command)
    from advlab.zoo import atomic
    print(format_markdown(rep))
    atomic.write_report(args.out, "mlvgm_analysis", rep, format_markdown(rep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
