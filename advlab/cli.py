"""The `advlab` command: train zoo models, prepare data, run the course, benchmark attacks.

    advlab train fmnist/cnn --profile full         # writes into the package zoo
    advlab train fmnist/cnn --profile quick        # a 1-epoch smoke run into build/zoo
    advlab data prepare                            # find/decompress Fashion-MNIST
    advlab course run --profile quick [--only 00]  # papermill into build/
    advlab course make-exercises                   # solutions/ -> exercises/
    advlab bench attacks                           # PGD cost vs fwd+bwd and torchattacks
    advlab defense-report lqvae --n 1000           # clean, grey-box, adaptive and sanity rows
"""
from __future__ import annotations

import argparse
import shlex
import sys

from advlab.purifiers import names as purifier_names
from advlab.training.zoo_entry import parse_setting as _setting, train_and_save  # noqa: F401 (kept names)


def _train(args) -> int:
    from advlab.training.zoo_entry import train_entry
    return train_entry(args)


def _data(args) -> int:
    from advlab import data
    try:
        path = data.prepare_fashion_mnist(verbose=True)
    except data.DataNotFoundError as e:
        print(str(e), file=sys.stderr)
        return 1
    x, y = data.batch("fashion_mnist", "test", n=None)
    print(f"Fashion-MNIST ready in {path}: test split {tuple(x.shape)}")
    return 0


def _course(args) -> int:
    from advlab import course
    if args.action == "run":
        return course.run(profile=args.profile, only=args.only, out=args.out, device=args.device, kind=args.kind)
    return course.make_exercises(check=args.check)


EVAL_ATTACKS = ("pgd", "autoattack")


def _evaluate(args) -> int:
    from advlab.evaluation.jobs import evaluate_zoo_model
    return evaluate_zoo_model(args)


def _defense_report(args) -> int:
    from advlab.evaluation.jobs import zoo_defense_report
    return zoo_defense_report(args)


def _bench(args) -> int:
    from advlab import bench
    return bench.main(args.rest)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="advlab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a zoo model")
    t.add_argument("name")
    t.add_argument("--profile", choices=("quick", "full"), default="full")
    t.add_argument("--device", default="auto")
    t.add_argument("--out", default=None, help="zoo folder to write into (default: the package zoo for full, build/zoo for quick)")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    t.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                   help="override config fields of the profile, e.g. iters=20000 latent_dim=128 (for searches)")
    t.set_defaults(func=_train)
    d = sub.add_parser("data", help="prepare datasets")
    d.add_argument("action", choices=("prepare",))
    d.set_defaults(func=_data)
    c = sub.add_parser("course", help="run the course notebooks or generate exercises")
    c.add_argument("action", choices=("run", "make-exercises"))
    c.add_argument("--profile", choices=("quick", "full"), default="quick")
    c.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 00,01")
    c.add_argument("--out", default="build")
    c.add_argument("--device", default="cpu")
    c.add_argument("--kind", default="notebooks", help="notebooks, solutions, exercises, a comma list, or all")
    c.add_argument("--check", action="store_true", help="make-exercises: only report drift, write nothing")
    c.set_defaults(func=_course)
    e = sub.add_parser("evaluate", help="robust accuracy of a zoo model (resumable; --record writes the manifest)")
    e.add_argument("name")
    e.add_argument("--attack", choices=EVAL_ATTACKS, default="pgd")
    e.add_argument("--eps", type=float, default=0.1)
    e.add_argument("--alpha", type=float, default=0.01)
    e.add_argument("--steps", type=int, default=40)
    e.add_argument("--n", type=int, default=2000, help="test images (a fixed subset drawn with --seed)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--chunk", type=int, default=250, help="images per saved chunk")
    e.add_argument("--device", default="cpu")
    e.add_argument("--threads", type=int, default=0)
    e.add_argument("--record", action="store_true", help="add the result to the zoo manifest")
    e.set_defaults(func=_evaluate)
    r = sub.add_parser("defense-report", help="clean / grey-box / adaptive / sanity report of a zoo purifier")
    r.add_argument("name", choices=purifier_names())
    r.add_argument("--classifier", default=None, help="zoo classifier (default: the defense's own)")
    r.add_argument("--n", type=int, default=1000, help="test images (a fixed subset drawn with --seed)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--eps", type=float, default=0.1)
    r.add_argument("--alpha", type=float, default=0.01)
    r.add_argument("--steps", type=int, default=40)
    r.add_argument("--eot", type=int, default=8, help="EoT samples of the adaptive attack (stochastic defenses)")
    r.add_argument("--backward", default=None, help="adaptive backward (default: the defense's first)")
    r.add_argument("--adaptive-n", type=int, default=None, help="adaptive row on the first N images only")
    r.add_argument("--sanity-n", type=int, default=200, help="large-eps sweep on the first N images")
    r.add_argument("--speed-n", type=int, default=256, help="images of the purify throughput measurement")
    r.add_argument("--speed-only", action="store_true", help="only measure purify's images/s on --speed-n images")
    r.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="defense settings, e.g. steps=200")
    r.add_argument("--device", default="auto")
    r.add_argument("--threads", type=int, default=0)
    r.add_argument("--out", default="build/reports")
    r.add_argument("--record", action="store_true", help="add the summary to the purifier's manifest record")
    r.set_defaults(func=_defense_report)
    b = sub.add_parser("bench", help="benchmarks")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(func=_bench)
    args = p.parse_args(argv)
    # the command as a user would type it, for the records (also under `python -m advlab.cli` and main([...]))
    args.command = "advlab " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
