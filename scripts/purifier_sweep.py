"""The settings searches of the purifiers: clean and grey-box accuracy per setting, on one test subset.

    python scripts/purifier_sweep.py defense-gan --device cuda --n 1000
    python scripts/purifier_sweep.py vaegan --device cuda --n 1000

Grey box: PGD-40 (Linf 0.1, step 0.01, random start) crafted once on the defense's classifier,
then purified. For the VAE-GAN the adaptive (end-to-end PGD-40) accuracy is measured too, since its
purifier is differentiable and cheap. Results go to --out as json and markdown.
"""
from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import torch

from advlab import attacks, data, defenses, evaluate, train, zoo


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("defense", choices=("defense-gan", "vaegan"))
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="build/reports")
    args = p.parse_args()
    device = train.resolve_device(args.device)
    x, y = data.batch("fashion_mnist", "test", n=args.n, seed=args.seed, device=device)
    pgd = attacks.PGD(eps=0.1, alpha=0.01, steps=40, random_start=True, seed=args.seed)
    rows, t0 = [], time.time()
    if args.defense == "defense-gan":
        gen, clf = zoo.load("fmnist/wgan-gp", device=device), zoo.load("fmnist/cnn", device=device)
        x_adv = pgd(clf, x, y)
        grid = [dict(lr=lr, steps=L, restarts=R) for lr, L, R in
                [(0.3, 200, 10), (0.1, 200, 10), (1.0, 200, 10), (0.3, 500, 10), (0.3, 200, 20),
                 (0.1, 500, 20), (0.3, 500, 20), (0.3, 100, 10), (0.3, 200, 5)]]
        for s in grid:
            d = defenses.DefenseGAN(gen, clf, batch_size=1000, **s).to(device).eval()
            with torch.no_grad():
                err = (d.purify(x) - x).pow(2).mean().item()
            rows.append(s | {"clean": evaluate.accuracy(d, x, y), "grey_box": evaluate.accuracy(d, x_adv, y),
                             "recon_mse": round(err, 5), "seconds": round(time.time() - t0, 1)})
            print(rows[-1], flush=True)
    else:
        V, clf = zoo.load("fmnist/vaegan", device=device), zoo.load("fmnist/vgg", device=device)
        x_adv = pgd(clf, x, y)
        grid = [dict(steps=0, step_size=0.0, space="image")]
        grid += [dict(steps=k, step_size=a, space=sp) for sp, k, a in
                 itertools.product(("image", "latent"), (1, 2, 5, 10), (0.1, 0.25, 0.5, 1.0))]
        for s in grid:
            d = defenses.VAEGANPurifier(V, clf, **s).to(device).eval()
            row = s | {"clean": evaluate.accuracy(d, x, y), "grey_box": evaluate.accuracy(d, x_adv, y)}
            row["adaptive"] = evaluate.accuracy(d, pgd(d, x, y), y)   # end to end, exact gradient
            rows.append(row | {"seconds": round(time.time() - t0, 1)})
            print(rows[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"sweep_{args.defense}_n{len(x)}_seed{args.seed}"
    meta = {"defense": args.defense, "n": len(x), "seed": args.seed, "grey_box_attack": repr(pgd),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "rows": rows}
    from advlab.zoo import atomic       # a crash leaves the old file or the new one, never half of one
    atomic.write_json(out / f"{name}.json", meta, indent=1)
    cols = [k for k in rows[0] if k != "seconds"]
    lines = [f"**{args.defense} settings on {len(x)} test images (seed {args.seed}), grey box = `{pgd!r}` "
             f"on the classifier ({meta['device']})**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f"{100 * r[c]:.1f}%" if c in ("clean", "grey_box", "adaptive") else str(r[c])
                                for c in cols) + " |" for r in rows]
    atomic.write_text(out / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
