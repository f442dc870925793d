"""Paper 002's and paper 004's Fashion-MNIST tables, measured with advlab's own zoo, attacks and defenses.

    python scripts/paper_tables.py 002 --device cuda --n 2000
    python scripts/paper_tables.py 004 --device cuda --n 1000

Each table is written as json and markdown into --out (default build/reports), with every attack's
repr beside the numbers and the paper's figures beside ours where the paper has them. Defenses
run at their paper settings (Defense-GAN L = 200, R = 10). The test subset is fixed by --seed.
004 also saves the arrays of its latent analyses (bit flips, encoder means) as an .npz.

On a CPU the Defense-GAN columns (21 latent searches of 1000 images) take hours; when only the LQ-VAE
changed, refresh its column and keep the others from an earlier run of the same subset and attacks:

    python scripts/paper_tables.py 004 --n 1000 --cache build/cache/paper004 --reuse docs/results/paper004_n1000_seed0.json

--reuse copies the Defense-GAN, Madry and Adv Tr columns from that json (after checking its n, seed
and attack reprs) and the tables say so; --cache keeps each classifier's adversarial examples as
safetensors (advlab.evaluation.adversarial_set: keyed by the classifier's sha256, the attack's repr
and the subset), and --attacks-only fills it.
"""
from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
import torch

from advlab import attacks, data, defenses, evaluate, train, zoo
from advlab.zoo import atomic

REUSABLE = ("Defense-GAN", "Madry", "Adv Tr")   # the columns that do not depend on the LQ-VAE

CLASSIFIERS = {"A": "fmnist/cnn", "B": "fmnist/vgg", "C": "fmnist/mlp"}
# paper 004, Table "FMNIST classifier on DeepFool black-box attack images (substitute model)"
PAPER_004_BLACK_BOX = {
    "A/B": (92.76, 29.14, 77.74, 74.41, 60.11, 48.27), "A/C": (92.76, 35.44, 77.11, 74.11, 62.58, 57.53),
    "B/A": (91.17, 67.82, 81.33, 77.97, 80.71, 76.61), "B/C": (91.17, 45.55, 78.83, 74.5, 69.19, 64.05),
    "C/A": (89.06, 79.11, 82.12, 78.82, 80.99, 81.84), "C/B": (89.06, 47.26, 80.76, 76.6, 67.46, 59.64)}
PAPER_004_BPDA = {"LQ-VAE": 57.41, "Defense-GAN": 39.41}
COLUMNS = ("No attack", "No defense", "LQ-VAE", "Defense-GAN", "Madry", "Adv Tr")


def white_box_attacks(eps: float) -> dict:
    """The attacks of paper 004's tables at our Fashion-MNIST threat model (Linf eps for the bounded ones)."""
    return {"FGSM": attacks.FGSM(eps=eps),
            "DeepFool": attacks.DeepFool(steps=50, overshoot=0.02),
            "CW": attacks.CW(c=1.0, steps=100, lr=0.01, binary_search_steps=5),
            "Iter FGSM": attacks.BIM(eps=eps, alpha=eps / 10, steps=20),
            "Madry (PGD-40)": attacks.PGD(eps=eps, alpha=0.01, steps=40, random_start=True)}


def pct(v: float) -> float:
    return round(100 * v, 2)


def markdown(rows: list[dict], cols: list[str]) -> str:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r.get(c, "—")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def table_002(args, device) -> dict:
    """Paper 002: VGG on an adversarial Fashion-MNIST test set, before and after VAE-GAN purification."""
    x, y = data.batch("fashion_mnist", "test", n=args.n, seed=args.seed, device=device)
    purifier = defenses.VAEGANPurifier.from_zoo("fashion_mnist", device=device)
    vgg = purifier.classifier
    rows = [{"attack": "none", "VGG": pct(evaluate.accuracy(vgg, x, y)),
             "VGG after purification": pct(evaluate.accuracy(purifier, x, y))}]
    for name, atk in {"FGSM": attacks.FGSM(eps=args.eps),
                      "PGD-40": attacks.PGD(eps=args.eps, alpha=0.01, steps=40, random_start=True)}.items():
        x_adv = atk(vgg, x, y)
        rows.append({"attack": f"{name} on VGG (grey box): {atk!r}", "VGG": pct(evaluate.accuracy(vgg, x_adv, y)),
                     "VGG after purification": pct(evaluate.accuracy(purifier, x_adv, y))})
    rows.append({"attack": "paper 002 (attack not stated; 2000 test images)", "VGG": 19.64,
                 "VGG after purification": 76.24})
    return {"title": f"Paper 002: VGG accuracy (%) on {len(x)} Fashion-MNIST test images (seed {args.seed}), "
                     f"before and after {purifier.describe()}",
            "rows": rows, "columns": ["attack", "VGG", "VGG after purification"]}


def adversarial(atk, name: str, clf, x, y, cache: Path | None, seed: int) -> torch.Tensor:
    """atk(clf, x, y); with a cache folder, crafted once through advlab.evaluation.adversarial_set
    (keyed by the classifier's sha256, the attack's repr and the subset) and read back afterwards."""
    if cache is None:
        return atk(clf, x, y)
    from advlab.evaluation import adversarial_set
    subset = {"dataset": "fashion_mnist", "split": "test", "n": len(x), "seed": seed}
    return adversarial_set.craft(clf, x, y, atk, model_sha256=zoo.info(name)["sha256"], subset=subset,
                                 folder=cache, name=name, progress=False)


def reused_columns(path: str | None, args) -> dict:
    """{row key: {column: value}} of REUSABLE columns from an earlier tables_004 json of the same subset."""
    if path is None:
        return {}
    old = json.loads(Path(path).read_text())
    if (old["n"], old["seed"]) != (args.n, args.seed):
        raise SystemExit(f"--reuse {path}: made on n={old['n']} seed={old['seed']}, not n={args.n} seed={args.seed}")
    now = {k: repr(a) for k, a in white_box_attacks(args.eps).items()}
    for r in old["white_box"]:
        if "attack" in r and now.get(r["Attack"]) != r["attack"]:
            raise SystemExit(f"--reuse {path}: its {r['Attack']} was {r['attack']}, now {now.get(r['Attack'])}")
    keyed = {(r["Attack"], r["Model"]): r for r in old["white_box"] if r["Attack"] != "Average"}
    keyed |= {r["Classifier/Substitute"]: r for r in old["black_box"] if r["Classifier/Substitute"] != "Average"}
    return {k: {c: r[c] for c in REUSABLE if c in r} for k, r in keyed.items()}


def tables_004(args, device) -> dict:
    x, y = data.batch("fashion_mnist", "test", n=args.n, seed=args.seed, device=device)
    cache = Path(args.cache) if args.cache else None
    reuse = reused_columns(args.reuse, args)
    clfs = {k: zoo.load(v, device=device) for k, v in CLASSIFIERS.items()}
    white_attacks = white_box_attacks(args.eps)
    if args.attacks_only:   # --models splits the work between processes that share the cache
        for aname, atk in white_attacks.items():
            for m, clf in clfs.items():
                if m not in args.models.split(","):
                    continue
                t0 = time.time()
                adversarial(atk, CLASSIFIERS[m], clf, x, y, cache, args.seed)
                print(aname, m, f"{time.time() - t0:.0f}s", flush=True)
        raise SystemExit(0)
    lq_model = zoo.load("fmnist/lqvae", device=device)
    if not reuse:
        gen = zoo.load("fmnist/wgan-gp", device=device)
        madry, fgsm_at = zoo.load("fmnist/pgd-at", device=device), zoo.load("fmnist/fgsm-at", device=device)

    def purified(clf) -> dict:
        out = {"LQ-VAE": defenses.LQVAE(lq_model, clf).to(device).eval()}
        if not reuse:
            out["Defense-GAN"] = defenses.DefenseGAN(gen, clf, batch_size=args.dgan_batch).to(device).eval()
        return out

    white, t0 = [], time.time()
    flips, latents = {}, {}
    for aname, atk in white_attacks.items():
        for m, clf in clfs.items():
            x_adv = adversarial(atk, CLASSIFIERS[m], clf, x, y, cache, args.seed)
            row = {"Attack": aname, "Model": m, "No attack": pct(evaluate.accuracy(clf, x, y)),
                   "No defense": pct(evaluate.accuracy(clf, x_adv, y))}
            row |= {k: pct(evaluate.accuracy(d, x_adv, y)) for k, d in purified(clf).items()}
            row |= reuse.get((aname, m), {})
            if m == "A" and not reuse:   # the adversarially trained SmallCNNs, attacked white box themselves
                row["Madry"] = pct(evaluate.accuracy(madry, atk(madry, x, y), y))
                row["Adv Tr"] = pct(evaluate.accuracy(fgsm_at, atk(fgsm_at, x, y), y))
            if m == "A":
                flips[aname] = defenses.LQVAE(lq_model, clf).code_flips(x, x_adv).cpu().numpy()
                if aname == "CW":
                    with torch.no_grad():
                        latents = {"mu_clean": lq_model.encode(x)[0].float().cpu().numpy(),
                                   "mu_cw": lq_model.encode(x_adv)[0].float().cpu().numpy(),
                                   "labels": y.cpu().numpy()}
            row["attack"] = repr(atk)
            white.append(row)
            print(aname, m, {k: row[k] for k in COLUMNS if k in row}, f"{time.time() - t0:.0f}s", flush=True)
    avg = {"Attack": "Average", "Model": ""} | {c: round(float(np.mean([r[c] for r in white if c in r])), 2)
                                               for c in COLUMNS}
    white.append(avg)

    black = []
    deepfool = attacks.DeepFool(steps=50, overshoot=0.02)
    adv_from = {m: adversarial(deepfool, CLASSIFIERS[m], clf, x, y, cache, args.seed) for m, clf in clfs.items()}
    for pair, paper in PAPER_004_BLACK_BOX.items():
        target, sub = pair.split("/")
        clf, x_adv = clfs[target], adv_from[sub]
        row = {"Classifier/Substitute": pair, "No attack": pct(evaluate.accuracy(clf, x, y)),
               "No defense": pct(evaluate.accuracy(clf, x_adv, y))}
        row |= {k: pct(evaluate.accuracy(d, x_adv, y)) for k, d in purified(clf).items()}
        row |= reuse.get(pair, {})
        if target == "A" and not reuse:
            row["Madry"] = pct(evaluate.accuracy(madry, x_adv, y))
            row["Adv Tr"] = pct(evaluate.accuracy(fgsm_at, x_adv, y))
        row |= {f"paper {c}": v for c, v in zip(COLUMNS, paper)}
        black.append(row)
        print(pair, row, flush=True)
    black.append({"Classifier/Substitute": "Average"}
                 | {c: round(float(np.mean([r[c] for r in black if c in r])), 2) for c in COLUMNS}
                 | {f"paper {c}": round(float(np.mean([p[i] for p in PAPER_004_BLACK_BOX.values()])), 2)
                    for i, c in enumerate(COLUMNS)})
    arrays = {f"flips_{k.split(' ')[0]}": v for k, v in flips.items()} | latents
    out = {"white_box": white, "black_box": black, "deepfool": repr(deepfool), "arrays": arrays,
           "n": len(x), "seed": args.seed, "seconds": round(time.time() - t0, 1),
           "lqvae": {"sha256": zoo.info("fmnist/lqvae")["sha256"], "latent_dim": lq_model.latent_dim}}
    if reuse:   # where the reused columns were measured: a reused run passes on its own source's device
        src = json.loads(Path(args.reuse).read_text())
        device = src.get("reused", {}).get("device") or src.get("device", "device not recorded")
        out["reused"] = {"from": args.reuse, "columns": list(REUSABLE), "device": device}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paper", choices=("002", "004"))
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--dgan-batch", type=int, default=500, help="images per Defense-GAN latent search batch")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="build/reports")
    p.add_argument("--reuse", help="004: take the Defense-GAN, Madry and Adv Tr columns from this earlier json")
    p.add_argument("--cache", help="004: folder keeping the adversarial examples (safetensors)")
    p.add_argument("--attacks-only", action="store_true", help="004: only fill --cache, then stop")
    p.add_argument("--models", default="A,B,C", help="004 --attacks-only: the classifiers to attack, e.g. B or A,C")
    args = p.parse_args()
    device = train.resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if args.paper == "004" and args.attacks_only and not args.cache:
        raise SystemExit("--attacks-only fills --cache: name the folder")
    if args.paper == "002":
        t = table_002(args, device)
        text = f"**{t['title']}** ({dev})\n\n" + markdown(t["rows"], t["columns"])
    else:
        t = tables_004(args, device) | {"device": dev}
        buf = io.BytesIO()
        np.savez_compressed(buf, **t.pop("arrays"))
        atomic.write_bytes(out / f"paper004_arrays_n{t['n']}.npz", buf.getvalue())
        wcols = ["Attack", "Model", *COLUMNS]
        bcols = ["Classifier/Substitute"] + [c for col in COLUMNS for c in (col, f"paper {col}")]
        attacks_used = {r["Attack"]: r["attack"] for r in t["white_box"] if "attack" in r}
        text = (f"**Paper 004 layout, Fashion-MNIST, white box on the classifier (grey box for the purifiers), "
                f"accuracy (%) on {t['n']} test images (seed {t['seed']}), {dev}.** Madry and Adv Tr: "
                "fmnist/pgd-at and fmnist/fgsm-at (SmallCNN, the architecture of A) attacked white box "
                "themselves; not trained for B and C."
                + (f" Columns {', '.join(t['reused']['columns'])} are those of the earlier run `{t['reused']['from']}` "
                   f"({t['reused']['device']}, same subset and attacks); the others were measured in this run."
                   if "reused" in t else "")
                + f" LQ-VAE: fmnist/lqvae, {t['lqvae']['latent_dim']} bits, sha256 {t['lqvae']['sha256'][:12]}."
                + "\n\n" + markdown(t["white_box"], wcols)
                + "\n\nAttacks: " + "; ".join(f"{k}: `{v}`" for k, v in attacks_used.items())
                + f"\n\n**Black box: DeepFool on the substitute, transferred** (`{t['deepfool']}`), ours next to "
                  "paper 004's\n\n" + markdown(t["black_box"], bcols))
    name = f"paper{args.paper}_n{args.n}_seed{args.seed}"
    atomic.write_json(out / f"{name}.json", t, indent=1)
    atomic.write_text(out / f"{name}.md", text + "\n")
    print(text)


if __name__ == "__main__":
    main()
