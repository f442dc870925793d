"""Store the zoo's weights in float16 where the recorded metrics move by at most 0.2 points.

    python scripts/compact_zoo.py                       # measure every model, convert those that pass
    python scripts/compact_zoo.py fmnist/cnn --dry-run  # measure only

For each model the converted weights go to a temporary copy of the zoo first; the script measures,
with the same images, seeds and attack draws, the metrics a user quotes with the float32 original and
with the float16 copy (upcast on load), and converts the real zoo entry (zoo.convert, which keeps the
original's sha256 under "converted_from" and these measurements under "conversion_check") only when
every accuracy moved by at most --tolerance points:
  classifiers   clean accuracy on all 10,000 test images; PGD-40 (Linf 0.1, step 0.01, random start,
                seed 0) on the first 1000 of the fixed subset (seed 0)
  purifiers     the purifier's clean accuracy with its zoo classifier (LQ-VAE on all 10,000; VAE-GAN,
                MLVGM on 1000; CARSO on 500; Defense-GAN and CMAP on 100: their latent searches are the cost); --purifier-n N
                measures on N images instead (1000 images resolve only 0.1-point steps)
The results are printed and written to docs/results/zoo_fp16_check.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from advlab import attacks, data, metrics, purifiers, zoo
from advlab.zoo import atomic

ROOT = Path(__file__).resolve().parent.parent
PURIFIER_OF = {"fmnist/lqvae": ("lqvae", 10000), "fmnist/vaegan": ("vaegan", 1000), "fmnist/hvae": ("mlvgm", 1000),
               "fmnist/carso": ("carso", 500), "fmnist/wgan-gp": ("defense-gan", 100),
               "fmnist/consistency": ("cmap", 100)}


def measure(name: str, zoo_dir: Path | None, purifier_n: int | None = None) -> dict:
    """{metric: (accuracy, n)} of the zoo model `name` as stored in zoo_dir (None: the bundled zoo);
    purifier_n overrides the purifier's number of test images."""
    if zoo_dir is None:
        os.environ.pop("ADVLAB_ZOO", None)
    else:
        os.environ["ADVLAB_ZOO"] = str(zoo_dir)
    if name in PURIFIER_OF:
        pname, n = PURIFIER_OF[name]
        n = purifier_n or n
        x, y = data.batch("fashion_mnist", split="test", n=n, seed=0)
        defense = purifiers.get(pname).from_zoo("fashion_mnist")
        if hasattr(defense, "reseed"):
            defense.reseed(0)
        return {f"{pname} clean": (metrics.accuracy(defense, x, y, batch_size=250), n)}
    model = zoo.load(name)
    x, y = data.batch("fashion_mnist", split="test", n=10000, seed=0)
    pgd = attacks.PGD(eps=0.1, alpha=0.01, steps=40, random_start=True, seed=0)
    return {"clean": (metrics.accuracy(model, x, y), len(x)),
            "PGD-40": (metrics.robust_accuracy(model, x[:1000], y[:1000], pgd), 1000)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="zoo models (default: all trained ones)")
    p.add_argument("--tolerance", type=float, default=0.2, help="largest accepted change, in accuracy points")
    p.add_argument("--dry-run", action="store_true", help="measure only; leave the zoo as it is")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--purifier-n", type=int, default=None,
                   help="test images for a purifier's clean accuracy (default: the table above)")
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "zoo_fp16_check.json"))
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    man = zoo.read_manifest()
    names = a.names or sorted(man)
    out_path = Path(a.out)
    report = json.loads(out_path.read_text()) if out_path.exists() else {}
    for name in names:
        if man[name].get("dtype") == "float16":
            print(f"{name}: already float16")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            tmp_zoo = Path(tmp) / "zoo"
            tmp_zoo.mkdir()
            shutil.copy(zoo.manifest_path(), tmp_zoo / "manifest.json")
            shutil.copytree(zoo.ZOO_DIR / "weights", tmp_zoo / "weights")
            zoo.convert(name, torch.float16, root=tmp_zoo)
            t = time.time()
            fp32, fp16 = measure(name, None, a.purifier_n), measure(name, tmp_zoo, a.purifier_n)
            os.environ.pop("ADVLAB_ZOO", None)
        check = {k: {"float32": fp32[k][0], "float16": fp16[k][0], "n": fp32[k][1],
                     "delta_points": round(100 * (fp16[k][0] - fp32[k][0]), 3)} for k in fp32}
        ok = all(abs(v["delta_points"]) <= a.tolerance for v in check.values())
        check = {"metrics": check, "tolerance_points": a.tolerance, "passed": ok, "seconds": round(time.time() - t, 1),
                 "device": f"cpu ({torch.get_num_threads()} threads)", "torch": torch.__version__,
                 "command": "python scripts/compact_zoo.py " + " ".join(argv if argv is not None else sys.argv[1:])}
        print(f"{name}: " + "; ".join(f"{k} {100 * v['float32']:.2f}% -> {100 * v['float16']:.2f}% "
                                      f"({v['delta_points']:+.2f} points, n {v['n']})" for k, v in check["metrics"].items())
              + ("  PASSED" if ok else "  FAILED: kept in float32"))
        report[name] = check
        if ok and not a.dry_run:
            rec = zoo.convert(name, torch.float16, check=check)
            print(f"  stored {rec['file']} ({rec['size_bytes']:,} bytes, was {rec['converted_from']['size_bytes']:,})")
        atomic.write_json(out_path, dict(sorted(report.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
