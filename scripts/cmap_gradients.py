"""The attacker's gradient through CMAP's search as the search gets longer (advlab.evaluation.unrolled.
gradient_comparison): the unrolled full gradient against BPDA's, on the first N images of the fixed test
subset, CMAP's zoo defaults otherwise. Writes docs/results/cmap_gradients.{json,md}.

    python scripts/cmap_gradients.py --n 4 --iters 0,5,25,100 --threads 2
"""
import argparse
import sys
import time

import torch

from advlab import data, purifiers
from advlab.evaluation.unrolled import gradient_comparison
from advlab.validate import device_name
from advlab.zoo import atomic


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--iters", default="0,5,25,100")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="docs/results")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    d = purifiers.get("cmap").from_zoo("fashion_mnist").eval()
    x, y = data.batch("fashion_mnist", "test", n=a.n, seed=0)
    rows = gradient_comparison(d, x, y, [int(t) for t in a.iters.split(",")], seed=a.seed)
    rep = {"defense": d.describe(), "n": a.n, "rows": rows, "device": device_name("cpu", cpu_model=True),
           "seconds": round(time.perf_counter() - t0, 1),
           "command": "python scripts/cmap_gradients.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    lines = ["# CMAP: the attacker's gradient through the search, unrolled against BPDA\n",
             f"`{rep['command']}` ({rep['device']}, {rep['seconds']:.0f} s). {d.describe()} with its iteration count "
             f"set to each row's; the first {a.n} images of the fixed test subset (clean), the same initial latents "
             "for both gradients. Medians over the images of the cross-entropy's input-gradient L2 norm; cosine and "
             "sign agreement (share of pixels, where both are non-zero) between the unrolled and the BPDA gradient.\n",
             "| iterations | unrolled L2 | BPDA L2 | classifier alone L2 | cosine | sign agreement | unrolled zero / non-finite |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['iters']} | {r['unrolled_l2']:.3g} | {r['bpda_l2']:.3g} | {r['classifier_l2']:.3g} | "
                     f"{r['cosine']:.2f} | {r['sign_agreement']:.2f} | {r['unrolled_zero']} / {r['unrolled_nonfinite']} |")
    atomic.write_report(a.out, "cmap_gradients", rep, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
