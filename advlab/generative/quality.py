"""Sample quality of the zoo's generators, measured offline (no Inception network, no download).

    from advlab.generative import quality
    rep = quality.measure("fmnist/hvae", n=10000)          # dict: fd, confident, class_hist, ...
    x = quality.draw("fmnist/wgan-gp", 64)                  # (64, 1, 28, 28) in [0, 1]

Three numbers per generator, all in the eyes of one zoo classifier (`fmnist/cnn` by default):

- **Fréchet distance (FD)** between Gaussians fitted to the classifier's penultimate features (the input
  of its last Linear layer: 384 numbers for SmallCNN) of n samples and of n test images (a seeded draw; all of them at n = 10000). It is FID's
  formula (Heusel et al., 2017) in a feature space that knows Fashion-MNIST; the floor it can reach is the
  FD between two disjoint sets of real images (`real_floor`, training against test images), so a
  generator is read against that floor, not against 0. Numbers are comparable only for the same
  classifier, n and test images.
- **confident**: the fraction of samples that the classifier labels with probability > 0.9 (a sample
  that looks like no class gets a flat prediction).
- **class_hist**: how the classifier labels the samples (mode dropping shows as a missing class).

How each generator draws a sample (`SAMPLERS`): WGAN-GP z ~ N(0, I / 128) as Defense-GAN draws it;
VAE-GAN's decoder on z ~ N(0, I); LQ-VAE's decoder g on a code of fair coins in {-1, 1}^128 (its prior
makes each bit a fair coin); the hierarchical VAE at temperature 1 (and 0.6, MLVGM's temperature);
the consistency model in one step (f(T z, T)) and two steps (T, then 0.8).

`python -m advlab.generative.quality [--n 10000] [--threads 1]` measures every generator of the zoo and
writes docs/results/generator_quality.{json,md}.
"""
from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

from advlab.validate import check_int

__all__ = ["SAMPLERS", "penultimate_features", "frechet_distance", "sample_stats", "draw", "measure"]

CONFIDENT = 0.9   # a sample counts as "confident" when the classifier's top probability exceeds this


def _wgan(model, n, g):
    return model(model.sample_latents(n, g))    # N(0, I / latent_dim), Defense-GAN's prior


def _vaegan(model, n, g):
    return model.decode(torch.randn(n, model.latent_dim, generator=g))


def _lqvae(model, n, g):
    bits = torch.randint(0, 2, (n, model.latent_dim), generator=g).float() * 2 - 1
    return model.g(bits)


def _hvae(temperature):
    return lambda model, n, g: model.sample(n, temperature=temperature, generator=g)


def _consistency(sigmas):
    return lambda model, n, g: model.sample(n, sigmas=sigmas, generator=g)


# (zoo name, variant) -> sampler(model, n, generator) -> (n, 1, 28, 28) in [0, 1]; one line per way of sampling
SAMPLERS: dict[tuple[str, str], Callable] = {
    ("fmnist/wgan-gp", "z ~ N(0, I/128)"): _wgan,
    ("fmnist/vaegan", "z ~ N(0, I)"): _vaegan,
    ("fmnist/lqvae", "fair-coin code"): _lqvae,
    ("fmnist/hvae", "temperature 1"): _hvae(1.0),
    ("fmnist/hvae", "temperature 0.6"): _hvae(0.6),
    ("fmnist/consistency", "1 step"): _consistency((80.0,)),
    ("fmnist/consistency", "2 steps (80, 0.8)"): _consistency((80.0, 0.8)),
}


def _variants(name: str) -> list[str]:
    found = [v for (n, v) in SAMPLERS if n == name]
    if not found:
        known = sorted({n for n, _ in SAMPLERS})
        raise ValueError(f"name: no sampler for {name!r}; known generators: {known}")
    return found


@torch.no_grad()
def draw(name: str, n: int, variant: str | None = None, seed: int = 0, model: nn.Module | None = None,
         batch_size: int = 500) -> torch.Tensor:
    """n samples (n, 1, 28, 28) in [0, 1] of the zoo generator `name` (its first variant unless `variant`
    is given), drawn on the CPU from a generator seeded with `seed`; `model` skips loading from the zoo."""
    check_int(n, "n")
    variants = _variants(name)
    variant = variants[0] if variant is None else variant
    if variant not in variants:
        raise ValueError(f"variant: {name} has the variants {variants}, got {variant!r}")
    if model is None:
        from advlab import zoo
        model = zoo.load(name)
    model.eval()
    g = torch.Generator().manual_seed(seed)
    out = [SAMPLERS[(name, variant)](model, min(batch_size, n - i), g).float().cpu()
           for i in range(0, n, batch_size)]
    return torch.cat(out)


@torch.no_grad()
def penultimate_features(classifier: nn.Module, x: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, probabilities) of images x: the input of the classifier's last nn.Linear (N, D) and its
    softmax output (N, classes), in float64 on the CPU, computed in eval mode in batches."""
    last = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError("classifier: has no nn.Linear layer whose input could serve as features")
    was_training = classifier.training
    classifier.eval()
    grabbed = []
    hook = last[-1].register_forward_hook(lambda mod, inp, out: grabbed.append(inp[0].detach()))
    device = next(classifier.parameters()).device
    feats, probs = [], []
    try:
        for i in range(0, len(x), batch_size):
            grabbed.clear()
            logits = classifier(x[i:i + batch_size].to(device))
            feats.append(grabbed[0].flatten(1).double().cpu())
            probs.append(logits.double().softmax(1).cpu())
    finally:
        hook.remove()
        classifier.train(was_training)
    return torch.cat(feats), torch.cat(probs)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to the rows of a (N, D) and b (M, D):
    |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2), in float64. The matrix square
    roots come from symmetric eigendecompositions (eigenvalues below 0 from round-off are set to 0)."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"a, b: expected (N, D) and (M, D) feature matrices, got {tuple(a.shape)} and {tuple(b.shape)}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a, b: need at least 2 rows each for a covariance, got {len(a)} and {len(b)}")
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)

    def sqrtm_psd(m):
        w, v = torch.linalg.eigh((m + m.T) / 2)
        return (v * w.clamp_min(0).sqrt()) @ v.T

    r = sqrtm_psd(s_a)
    cross = torch.linalg.eigvalsh((r @ s_b @ r + (r @ s_b @ r).T) / 2).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + s_a.trace() + s_b.trace() - 2 * cross)


def sample_stats(features: torch.Tensor, probs: torch.Tensor, ref_features: torch.Tensor) -> dict:
    """The three numbers of the module docstring from precomputed features and probabilities."""
    top = probs.max(1)
    hist = torch.bincount(top.indices, minlength=probs.shape[1]).tolist()
    return {"fd": round(frechet_distance(features, ref_features), 3),
            "confident": round(float((top.values > CONFIDENT).double().mean()), 4),
            "class_hist": hist}


def measure(name: str, n: int = 10000, variant: str | None = None, classifier: str = "fmnist/cnn", seed: int = 0,
            model: nn.Module | None = None, clf: nn.Module | None = None, ref: torch.Tensor | None = None) -> dict:
    """sample_stats of n samples of the zoo generator `name` against n test images (drawn with `seed`), plus the
    seconds it took to draw them; `model` skips loading the generator from the zoo, `clf` the classifier (it
    must be `classifier`) and `ref` the test images' features (several generators against one reference)."""
    from advlab import data, zoo
    clf = zoo.load(classifier) if clf is None else clf
    if ref is None:
        x_ref, _ = data.batch("fashion_mnist", split="test", n=n, seed=seed)
        ref, _ = penultimate_features(clf, x_ref)
    t0 = time.perf_counter()
    x = draw(name, n, variant=variant, seed=seed, model=model)
    secs = time.perf_counter() - t0
    feats, probs = penultimate_features(clf, x)
    return {"generator": name, "variant": variant or _variants(name)[0], "n": n, "classifier": classifier,
            "seed": seed, **sample_stats(feats, probs, ref), "sample_seconds": round(secs, 2)}


def format_markdown(rep: dict) -> str:
    """The record as the Markdown table of docs/results/generator_quality.md."""
    lines = ["# Sample quality of the zoo's generators\n",
             f"Command: `{rep['command']}` ({rep['device']}, {rep['seconds']:.0f} s). Features: the input of "
             f"`{rep['classifier']}`'s last Linear layer; reference: {rep['n']} test images (seed {rep['seed']}); "
             f"confident: top probability > {CONFIDENT}.\n",
             f"Floor: FD between {rep['n']} training and {rep['n']} test images = **{rep['real_floor']['fd']:.2f}** "
             f"(confident {100 * rep['real_floor']['confident']:.1f}%).\n",
             "| generator | sampling | FD | confident | smallest / largest class share | seconds to draw |",
             "|---|---|---:|---:|---|---:|"]
    for r in rep["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['generator']} | {r['variant']} | — | — | {r['skipped']} | — |")
            continue
        h = r["class_hist"]
        lines.append(f"| {r['generator']} | {r['variant']} | {r['fd']:.2f} | {100 * r['confident']:.1f}% | "
                     f"{100 * min(h) / sum(h):.1f}% / {100 * max(h) / sum(h):.1f}% | {r['sample_seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    """The command line of the module docstring; writes docs/results/generator_quality.{json,md} (or under --out)."""
    import argparse
    import sys

    from advlab import data, zoo
    from advlab.validate import device_name
    from advlab.zoo import atomic

    p = argparse.ArgumentParser(prog="python -m advlab.generative.quality",
                                description="FD / confident / class histogram of every zoo generator")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--classifier", default="fmnist/cnn")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="docs/results")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    clf = zoo.load(args.classifier)
    x_test, _ = data.batch("fashion_mnist", split="test", n=args.n, seed=args.seed)
    x_train, _ = data.batch("fashion_mnist", split="train", n=args.n, seed=args.seed)
    ref, _ = penultimate_features(clf, x_test)
    feats, probs = penultimate_features(clf, x_train)
    rep = {"classifier": args.classifier, "classifier_sha256": zoo.info(args.classifier)["sha256"], "n": args.n,
           "seed": args.seed, "real_floor": sample_stats(feats, probs, ref), "rows": []}
    for name, variant in SAMPLERS:
        row = {"generator": name, "variant": variant}
        try:
            row["sha256"] = zoo.info(name)["sha256"]
        except zoo.NotTrainedError:
            row["skipped"] = "not trained yet"
        else:
            got = measure(name, args.n, variant, args.classifier, args.seed, model=zoo.load(name), clf=clf, ref=ref)
            row.update({k: v for k, v in got.items() if k not in ("generator", "variant", "classifier", "seed")})
        rep["rows"].append(row)
        print(row if "skipped" in row else {k: row[k] for k in ("generator", "variant", "fd", "confident")},
              flush=True)
    rep["device"] = device_name(torch.device("cpu"), cpu_model=True)
    rep["seconds"] = round(time.perf_counter() - t0, 1)
    rep["command"] = "python -m advlab.generative.quality " + " ".join(sys.argv[1:] if argv is None else argv)
    atomic.write_report(args.out, "generator_quality", rep, format_markdown(rep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
