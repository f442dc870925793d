"""CMAP's reported search over K, the iteration count, lam and beta (the paper's text lost them), chosen on a
validation split, never on the test subset the reports use.

    python -m advlab.purifiers.cmap.search --threads 1              # every point, resumable
    python -m advlab.purifiers.cmap.search --n-val 200 --device cuda
    python -m advlab.purifiers.cmap.search --quick --n-val 4           # a smoke test of the command
    python -m advlab.purifiers.cmap.search --axes iters --n-val 40     # one axis: cmap_search_iters.{json,md}

One setting at a time around the centre CENTRE (K 8, 100 iterations, lam 1, beta 0.1: CMAP's settings before a
complete search chose its defaults; CMAP's constructor defaults are the recorded choice, which a test checks):
  k        K in {4, 8, 16}
  lam      lam in {0, 0.5, 1, 2}                      (0: MAE alone)
  beta     beta in {0, 0.01, 0.1, 1}                  (0: no distribution term)
  iters    the iteration count in {25, 50, 100, 200, 400}, with the distribution term (beta 0.1) and without
           (beta 0): the paper's observation is that without it accuracy peaks, then falls as the latents
           start to fit the adversarial noise
Every point is measured on the same validation images (the n_val test images after the fixed 1000 of the
reports: data.batch("fashion_mnist", "test", n=1000 + n_val, seed=0)[1000:]): clean accuracy (majority
vote over the K images), grey-box accuracy (PGD-40, step 0.01, random start, Linf 0.1, crafted on the
classifier alone, then purified) and seconds per image of the defense. Settings that differ in the iteration
count alone are read from one search of the largest count at each count (measure_at: the same images as
separate runs, since Adam's steps do not depend on the count; the seconds are those up to that step). The
chosen setting has the highest grey-box accuracy among the points with clean accuracy >= 80% (the issue's
bar), or the highest clean accuracy when none reaches it. Each point is saved as it finishes
(build/cmap_search/), so a rerun resumes. Results: docs/results/cmap_search.{json,md}; a run of some axes only (--axes) chooses nothing and
writes docs/results/cmap_search_AXES.{json,md} (the lecture reads a complete search only).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

CENTRE = {"k": 8, "iters": 100, "lam": 1.0, "beta": 0.1}
AXES = {"k": [4, 8, 16], "lam": [0.0, 0.5, 1.0, 2.0], "beta": [0.0, 0.01, 0.1, 1.0]}
ITERS = [25, 50, 100, 200, 400]
CLEAN_BAR = 0.80


def points(iters=ITERS, axes=AXES, centre=CENTRE) -> list[dict]:
    """The settings of the search, each once: the one-at-a-time axes, then iters with and without beta."""
    out = []
    for key, values in axes.items():
        out += [centre | {key: v} for v in values]
    for beta in (centre["beta"], 0.0):
        out += [centre | {"iters": it, "beta": beta} for it in iters]
    unique = []
    for p in out:
        if p not in unique:
            unique.append(p)
    return unique


def validation_split(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The n test images after the fixed 1000-image subset of the reports (same seed)."""
    from advlab import data
    x, y = data.batch("fashion_mnist", "test", n=1000 + n, seed=seed)
    return x[1000:], y[1000:]


def measure(defense, x: torch.Tensor, y: torch.Tensor, x_grey: torch.Tensor, seed: int = 0) -> dict:
    """Clean and grey-box accuracy of `defense` (vote) on x / x_grey, and its seconds per image."""
    defense.reseed(seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        clean = (defense(x).argmax(1) == y).float().mean().item()
    secs = (time.perf_counter() - t0) / len(x)
    defense.reseed(seed + 1)
    with torch.no_grad():
        grey = (defense(x_grey).argmax(1) == y).float().mean().item()
    return {"clean_acc": round(clean, 4), "grey_box_acc": round(grey, 4), "seconds_per_image": round(secs, 4)}


def measure_at(defense, x: torch.Tensor, y: torch.Tensor, x_grey: torch.Tensor, counts, seed: int = 0) -> dict:
    """measure() of `defense` with iters = t for every t in counts, from one search of defense.iters steps read
    at each count (CMAP.search_at: the same images as separate runs). seconds_per_image at t: the clean search's
    wall time up to step t plus the vote. Returns {t: row}."""
    from advlab.purifiers.voting import aggregate
    counts = sorted(set(counts))
    rows = {t: {} for t in counts}
    for name, images, s in (("clean_acc", x, seed), ("grey_box_acc", x_grey, seed + 1)):
        defense.reseed(s)
        snaps = defense.search_at(images, counts)
        for t in counts:
            t0 = time.perf_counter()
            k, n = snaps[t].shape[:2]
            with torch.no_grad():
                logits = defense.classifier(snaps[t].flatten(0, 1)).view(k, n, -1)
                acc = (aggregate(logits, "vote").argmax(1) == y).float().mean().item()
            rows[t][name] = round(acc, 4)
            if name == "clean_acc":
                rows[t]["seconds_per_image"] = round((snaps["seconds"][t] + time.perf_counter() - t0) / len(x), 4)
    return {t: {"clean_acc": r["clean_acc"], "grey_box_acc": r["grey_box_acc"],
                "seconds_per_image": r["seconds_per_image"]} for t, r in rows.items()}


def choose(rows: list[dict]) -> dict:
    """The chosen row (module docstring)."""
    ok = [r for r in rows if r["clean_acc"] >= CLEAN_BAR]
    return max(ok, key=lambda r: (r["grey_box_acc"], r["clean_acc"])) if ok else max(rows, key=lambda r: r["clean_acc"])


def run(generator, classifier, x: torch.Tensor, y: torch.Tensor, settings: list[dict], seed: int = 0,
        state_dir: str | Path | None = None, progress: bool = True, batch_size: int = 128) -> dict:
    """Measure every setting on (x, y); each row is cached under state_dir (None: no cache)."""
    from advlab import attacks
    from advlab.purifiers.cmap.purifier import CMAP
    pgd = attacks.PGD(eps=0.1, alpha=0.01, steps=40, random_start=True, seed=seed)
    x_grey = pgd(classifier, x, y)
    with torch.no_grad():
        base = {"clean_acc": round((classifier(x).argmax(1) == y).float().mean().item(), 4),
                "grey_box_acc": round((classifier(x_grey).argmax(1) == y).float().mean().item(), 4)}
    def cache(s):
        key = "_".join(f"{k}{s[k]:g}" for k in ("k", "iters", "lam", "beta"))
        return key, (Path(state_dir) / f"{key}_n{len(x)}_s{seed}.json" if state_dir else None)

    found = {}
    for s in settings:
        _, cached = cache(s)
        if cached and cached.exists():
            found[json.dumps(s, sort_keys=True)] = json.loads(cached.read_text())
    # settings that differ in the iteration count alone: one search of the largest count, read at each (measure_at)
    groups = {}
    for s in settings:
        if json.dumps(s, sort_keys=True) not in found:
            groups.setdefault(tuple(s[k] for k in ("k", "lam", "beta")), []).append(s)
    done = n_cached = len(found)
    for group in groups.values():
        top = max(group, key=lambda s: s["iters"])
        defense = CMAP(generator, classifier, seed=seed, batch_size=batch_size, **top).eval()
        if len(group) == 1:
            measured = {top["iters"]: measure(defense, x, y, x_grey, seed)}
        else:
            measured = measure_at(defense, x, y, x_grey, [s["iters"] for s in group], seed)
        for s in group:
            row = dict(s) | measured[s["iters"]]
            key, cached = cache(s)
            found[json.dumps(s, sort_keys=True)] = row
            if cached:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(json.dumps(row) + "\n")
            done += 1
            if progress:
                print(f"[{done}/{len(settings)}] {key}: clean {100 * row['clean_acc']:.1f}%, grey box "
                      f"{100 * row['grey_box_acc']:.1f}%, {row['seconds_per_image']:.3f} s/image", flush=True)
    rows = [found[json.dumps(s, sort_keys=True)] for s in settings]
    return {"n_val": len(x), "seed": seed, "grey_box_attack": repr(pgd), "classifier_alone": base, "rows": rows,
            "chosen": choose(rows), "clean_bar": CLEAN_BAR, "measured_here": len(settings) - n_cached}


def iteration_axis(rep: dict) -> dict[float, list[tuple[int, float, float]]]:
    """The record's iteration axis: {beta: [(iterations, clean, grey box), ...] by iterations} at the centre's K
    and lam, for each beta measured at three counts or more (a beta of its own axis has one count: no curve)."""
    axis = {}
    for r in rep["rows"]:
        if r["k"] == CENTRE["k"] and r["lam"] == CENTRE["lam"]:
            axis.setdefault(r["beta"], []).append((r["iters"], r["clean_acc"], r["grey_box_acc"]))
    return {beta: sorted(pts) for beta, pts in sorted(axis.items()) if len(pts) >= 3}


def format_markdown(rep: dict, heading: bool = True) -> str:
    """The record as the Markdown of docs/results/cmap_search.md (heading=False: without its title line, as
    lecture 09 shows it)."""
    b = rep["classifier_alone"]
    from advlab.metrics import wilson
    axes = rep.get("axes") or ["k", "lam", "beta", "iters"]
    title = ("the search over K, iterations, lam and beta" if rep.get("chosen") is not None
             else "one-at-a-time rows of the axes " + ", ".join(axes) + " (a partial search: nothing chosen)")
    m = rep.get("measured_here")
    here = ("" if m is None or m == len(rep["rows"]) else
            f" for the {m} points this call measured; the other {len(rep['rows']) - m} came from the cache of earlier "
            "calls of the same images (build/cmap_search)")
    c = rep.get("chosen")
    lines = ([f"# CMAP: {title} (validation split)\n"] if heading else []) + [
             f"Command: `{rep['command']}` ({rep['device']}, {rep['seconds'] / 60:.0f} min{here}). {rep['n_val']} validation "
             f"images (the test images after the reports' fixed 1000); grey box: `{rep['grey_box_attack']}` on the "
             f"classifier alone, then purified. The classifier alone: {100 * b['clean_acc']:.1f}% clean, "
             f"{100 * b['grey_box_acc']:.1f}% grey box.\n",
             "| K | iterations | lam | beta | clean | grey box (95% CI) | s / image |", "|---:|---:|---:|---:|---:|---:|---:|"]
    n = rep["n_val"]
    for r in rep["rows"]:
        lo, hi = wilson(round(r["grey_box_acc"] * n), n)
        mark = " **(chosen)**" if c is not None and all(r[k] == c[k] for k in ("k", "iters", "lam", "beta")) else ""
        lines.append(f"| {r['k']} | {r['iters']} | {r['lam']:g} | {r['beta']:g}{mark} | {100 * r['clean_acc']:.1f}% | "
                     f"{100 * r['grey_box_acc']:.1f}% ({100 * lo:.0f} to {100 * hi:.0f}) | {r['seconds_per_image']:.3f} |")
    words = []
    for beta, pts in iteration_axis(rep).items():
        j = max(range(len(pts)), key=lambda i: pts[i][2])
        words.append(f"beta {beta:g}: grey box highest at {pts[j][0]} iterations ({100 * pts[j][2]:.1f}%), "
                     f"{100 * pts[-1][2]:.1f}% at {pts[-1][0]}")
    if words:
        lines.append("\nThe iteration axis: " + "; ".join(words) + ".")
    if c is None:
        return "\n".join(lines) + "\n"
    rule = (f"the highest grey box with clean >= {100 * rep['clean_bar']:.0f}%" if c["clean_acc"] >= rep["clean_bar"]
            else f"no point reaches {100 * rep['clean_bar']:.0f}% clean: the highest clean accuracy")
    lines.append(f"\nChosen ({rule}): K {c['k']}, {c['iters']} iterations, lam {c['lam']:g}, beta {c['beta']:g}.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    """The command line of the module docstring."""
    import argparse
    import sys

    from advlab import zoo
    from advlab.validate import device_name
    from advlab.zoo import atomic

    p = argparse.ArgumentParser(prog="python -m advlab.purifiers.cmap.search", description=__doc__.split("\n")[0])
    p.add_argument("--n-val", type=int, default=500)
    p.add_argument("--classifier", default="fmnist/cnn")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--state", default="build/cmap_search")
    p.add_argument("--out", default="docs/results")
    p.add_argument("--quick", action="store_true", help="a tiny grid (K 2 and 4, 2 and 4 iterations): a smoke test")
    p.add_argument("--axes", default="k,lam,beta,iters",
                   help="comma list of k, lam, beta, iters: the axes to run (not all: nothing chosen, own file)")
    args = p.parse_args(argv)
    axes = [a.strip() for a in args.axes.split(",") if a.strip()]
    if not axes or any(a not in ("k", "lam", "beta", "iters") for a in axes):
        p.error(f"argument --axes: a comma list of k, lam, beta, iters, got {args.axes!r}")
    axes = [a for a in ("k", "lam", "beta", "iters") if a in axes]
    partial = len(axes) < 4
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    gen, clf = zoo.load("fmnist/consistency", device=args.device), zoo.load(args.classifier, device=args.device)
    x, y = validation_split(args.n_val, args.seed)
    if args.quick:
        settings = points(iters=[2, 4] if "iters" in axes else [], axes={"k": [2, 4]} if "k" in axes else {},
                          centre={"k": 2, "iters": 2, "lam": 1.0, "beta": 0.1})
    else:
        settings = points(iters=ITERS if "iters" in axes else [], axes={a: AXES[a] for a in axes if a in AXES})
    if not settings:
        p.error(f"argument --axes: {args.axes!r} gives no setting under --quick (its grid has k and iters only)")
    rep = run(gen, clf, x.to(args.device), y.to(args.device), settings, args.seed, args.state)
    rep |= {"generator_sha256": zoo.info("fmnist/consistency")["sha256"], "classifier": args.classifier,
            "device": device_name(torch.device(args.device), cpu_model=True), "seconds": round(time.perf_counter() - t0, 1),
            "command": "python -m advlab.purifiers.cmap.search " + " ".join(sys.argv[1:] if argv is None else argv)}
    if partial:
        rep |= {"axes": axes, "chosen": None}
    atomic.write_report(args.out, "cmap_search" + ("_" + "_".join(axes) if partial else ""), rep, format_markdown(rep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
