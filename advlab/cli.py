"""The `advlab` command: train zoo models, prepare data, run the course, benchmark attacks.

    advlab train fmnist/cnn --profile full         # writes into the package zoo
    advlab train fmnist/cnn --profile quick        # a 1-epoch smoke run into build/zoo
    advlab data prepare                            # find/decompress Fashion-MNIST
    advlab course init my-course                   # copy the course out of the installed package
    advlab course site --executed build --check    # the website (Jupyter Book) into build/site
    advlab course run --profile quick [--only 00]  # papermill into build/
    advlab course make-exercises                   # solutions/ -> exercises/
    advlab bench attacks                           # PGD cost vs fwd+bwd and torchattacks
    advlab defense-report lqvae --n 1000           # clean, grey-box, adaptive and sanity rows
    advlab defense-report cmap --n 1000 --clean-only   # the clean rows alone, resumable (slow defenses)
    advlab adaptive lqvae --n 1000 --profile full  # the attack ensemble, per-image worst case (--help)
    advlab leaderboard --out build/leaderboard     # every defense x every attack, from the records

A bad option or a failure the user can fix (unknown model, missing data, a checksum mismatch) ends
with one line `advlab CMD: message` on stderr and exit status 2; ADVLAB_TRACEBACK=1 shows the
traceback instead.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import sys

from advlab.purifiers import names as purifier_names
from advlab.training.zoo_entry import parse_setting as _setting, train_and_save  # noqa: F401 (kept names)


def _train(args) -> int:
    from advlab.training.zoo_entry import train_entry
    try:
        return train_entry(args)
    except TypeError as e:   # the config class refused a --set NAME: say so (the trainers build it from **kwargs)
        m = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if m and m.group(1) in {t.partition("=")[0] for t in args.set}:
            raise ValueError(f"--set {m.group(1)}: not a config field of {args.name}'s training ({e})") from None
        raise


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
        return course.run(profile=args.profile, only=args.only, out=args.out, device=args.device, kind=args.kind,
                          root=args.root, fake_cuda=args.fake_cuda, jobs=args.jobs)
    if args.action == "site":
        from advlab import site
        out = args.out if args.out != "build" else "build/site"
        html_root = site.build(args.executed, out, repository_url=args.repository_url, root=args.root)
        print(f"site: {html_root / 'index.html'}")
        if args.check:
            problems = site.check(html_root)
            if problems:
                print("site check failed:\n  " + "\n  ".join(problems), file=sys.stderr)
                return 1
            print(f"site check: every page loaded in headless Chromium with no broken image, link or traceback; "
                  f"screenshots in {html_root.parent / 'screenshots'}")
        return 0
    if args.action == "init":
        from advlab import resources
        if not args.dir:
            raise ValueError("DIR: `advlab course init DIR` needs the folder to copy the course into")
        dest = resources.init_course(args.dir, force=args.force)
        print(f"the course is in {dest}: notebooks/, exercises/, solutions/, docs/results/\n"
              f"  open it with:  jupyter lab {dest}")
        return 0
    return course.make_exercises(check=args.check, root=args.root)


EVAL_ATTACKS = ("pgd", "autoattack")


def _evaluate(args) -> int:
    from advlab.evaluation.jobs import evaluate_zoo_model
    return evaluate_zoo_model(args)


def _defense_report(args) -> int:
    from advlab.evaluation.jobs import zoo_defense_report
    return zoo_defense_report(args)


def _bench(args) -> int:
    from advlab.evaluation import bench
    return bench.main(args.rest)


def _passthrough(module: str):
    """A subcommand whose options the library module's own main(argv) parses (adaptive, leaderboard)."""
    def run(args) -> int:
        import importlib
        try:
            return importlib.import_module(module).main(args.rest)
        except SystemExit as exc:   # its argparse already printed the one-line error or the help
            return exc.code if isinstance(exc.code, int) else 0
    return run


# ------------------------------------------------------------------ option types: each error names its option

class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, `advlab CMD: argument --opt: ...` (no usage block), exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message}\n")


def _int(low: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        return v
    parse.__name__ = f"int >= {low}"
    return parse


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


def _device(text: str) -> str:
    if text == "auto":
        return text
    import torch
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device (auto, cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available here")
    return text


def _zoo_name(text: str) -> str:
    from advlab import zoo
    if text not in zoo.REGISTRY:
        raise argparse.ArgumentTypeError(f"unknown zoo model {text!r}; available: {', '.join(zoo.names())}")
    return text


def _setting_text(text: str) -> str:
    try:
        _setting(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--set: ")) from None
    return text


_COUNT, _SEED, _THREADS = _int(1), _int(0), _int(0)


def _check_n(parser, dataset: str, n: int) -> None:
    from advlab import data
    have = data.info(dataset).n_test
    if n > have:
        parser.error(f"argument --n: {n} is more than the {have} images of {dataset}'s test split")


PASSTHROUGH = {"adaptive": "advlab.evaluation.adaptive", "leaderboard": "advlab.evaluation.leaderboard"}


def main(argv=None) -> int:
    """The `advlab` command: parse argv, run the subcommand; returns the exit status (2 for a usage error)."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in PASSTHROUGH:   # the module's own parser takes every option (argparse's REMAINDER
        args = argparse.Namespace(cmd=words[0], rest=words[1:], func=_passthrough(PASSTHROUGH[words[0]]),
                                  command="advlab " + " ".join(shlex.quote(w) for w in words))
        return _run(args)                    # would stop at a leading --option)
    p = _Parser(prog="advlab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a zoo model")
    t.add_argument("name", type=_zoo_name)
    t.add_argument("--profile", choices=("quick", "full"), default="full")
    t.add_argument("--device", type=_device, default="auto")
    t.add_argument("--out", default=None, help="zoo folder to write into (default: the package zoo for full, build/zoo for quick)")
    t.add_argument("--threads", type=_THREADS, default=0, help="torch CPU threads (0: torch's default)")
    t.add_argument("--set", action="extend", nargs="+", type=_setting_text, default=[], metavar="NAME=VALUE",
                   help="override config fields of the profile, e.g. iters=20000 latent_dim=128 (for searches)")
    t.set_defaults(func=_train)
    d = sub.add_parser("data", help="prepare datasets")
    d.add_argument("action", choices=("prepare",))
    d.set_defaults(func=_data)
    c = sub.add_parser("course", help="copy the course out (init DIR), run its notebooks, or generate exercises")
    c.add_argument("action", choices=("init", "run", "make-exercises", "site"))
    c.add_argument("dir", nargs="?", default=None, help="init: the folder to copy the course into")
    c.add_argument("--root", default=None, help="run / make-exercises: the course folder (default: found from here)")
    c.add_argument("--force", action="store_true", help="init: copy into a non-empty folder, overwriting notebooks")
    c.add_argument("--executed", default="build", help="site: the --out of an `advlab course run` (executed notebooks)")
    c.add_argument("--repository-url", default=None, help="site: the course's repository, for open-in-Colab buttons")
    c.add_argument("--check", action="store_true", help="site: load every page in headless Chromium and fail on "
                   "broken images, links or tracebacks; make-exercises: only report drift")
    c.add_argument("--profile", choices=("quick", "full"), default="quick")
    c.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 00,01")
    c.add_argument("--out", default="build")
    c.add_argument("--device", type=_device, default="cpu")
    c.add_argument("--kind", default="notebooks", help="notebooks, solutions, exercises, a comma list, or all")
    c.add_argument("--fake-cuda", action="store_true", help="run: DEVICE='cuda' on the CPU under advlab.fake_cuda, "
                   "which fails on device mixing as a GPU would (--device is ignored)")
    c.add_argument("--jobs", type=_COUNT, default=1, help="run: notebooks executed at once, one torch thread "
                   "each unless OMP_NUM_THREADS is set (for machines with many cores; no gain on 2)")
    c.set_defaults(func=_course)
    e = sub.add_parser("evaluate", help="robust accuracy of a zoo model (resumable; --record writes a record)")
    e.add_argument("name", type=_zoo_name)
    e.add_argument("--attack", choices=EVAL_ATTACKS, default="pgd")
    e.add_argument("--eps", type=_positive_float, default=0.1)
    e.add_argument("--alpha", type=_positive_float, default=0.01)
    e.add_argument("--steps", type=_COUNT, default=40)
    e.add_argument("--n", "--images", dest="n", type=_COUNT, default=2000,
                   help="test images (a fixed subset drawn with --seed); --images under torchrun, whose own "
                   "parser takes --n for an ambiguous prefix of its options")
    e.add_argument("--seed", type=_SEED, default=0)
    e.add_argument("--chunk", type=_COUNT, default=250, help="images per saved chunk")
    e.add_argument("--cache", default="build/eval", help="folder of the saved chunks (the resume state)")
    e.add_argument("--device", type=_device, default="cpu")
    e.add_argument("--threads", type=_THREADS, default=0)
    e.add_argument("--record", action="store_true",
                   help="write the result to docs/results/records/NAME/KEY.json (evaluation.records)")
    e.set_defaults(func=_evaluate)
    r = sub.add_parser("defense-report", help="clean / grey-box / adaptive / sanity report of a zoo purifier")
    r.add_argument("name", choices=purifier_names())
    r.add_argument("--classifier", type=_zoo_name, default=None, help="zoo classifier (default: the defense's own)")
    r.add_argument("--n", "--images", dest="n", type=_COUNT, default=1000,
                   help="test images (a fixed subset drawn with --seed); --images under torchrun, whose own "
                   "parser takes --n for an ambiguous prefix of its options")
    r.add_argument("--seed", type=_SEED, default=0)
    r.add_argument("--eps", type=_positive_float, default=0.1)
    r.add_argument("--alpha", type=_positive_float, default=0.01)
    r.add_argument("--steps", type=_COUNT, default=40)
    r.add_argument("--eot", type=_COUNT, default=8, help="EoT samples of the adaptive attack (stochastic defenses)")
    r.add_argument("--backward", default=None, help="adaptive backward (default: the defense's first)")
    r.add_argument("--adaptive-n", type=_COUNT, default=None, help="adaptive row on the first N images only")
    r.add_argument("--sanity-n", type=_COUNT, default=200, help="large-eps sweep on the first N images")
    r.add_argument("--speed-n", type=_COUNT, default=256, help="images of the purify throughput measurement")
    r.add_argument("--speed-only", action="store_true", help="only measure purify's images/s on --speed-n images")
    r.add_argument("--clean-only", action="store_true", help="only the clean rows and the throughput, the defense's "
                   "in resumable chunks under --cache (default build/clean; shared out under torchrun): for "
                   "defenses whose every row costs hours")
    r.add_argument("--chunk", type=_COUNT, default=100, help="images per saved chunk of --clean-only")
    r.add_argument("--set", action="extend", nargs="+", type=_setting_text, default=[], metavar="NAME=VALUE",
                   help="defense settings, e.g. steps=200")
    r.add_argument("--device", type=_device, default="auto")
    r.add_argument("--threads", type=_THREADS, default=0)
    r.add_argument("--out", default="build/reports")
    r.add_argument("--cache", default=None, help="folder of the cached grey-box adversarial images "
                                                 "(default: build/cache/advsets)")
    r.add_argument("--record", action="store_true",
                   help="write the summary to docs/results/records/NAME+CLASSIFIER/ (evaluation.records)")
    r.set_defaults(func=_defense_report)
    b = sub.add_parser("bench", help="benchmarks")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(func=_bench)
    # listed for --help only: main() hands their words to the module's own parser before this one runs
    sub.add_parser("adaptive", help="the adaptive attack ensemble on a purifier or zoo classifier (per-image "
                                    "worst case); advlab adaptive --help")
    sub.add_parser("leaderboard", help="the leaderboard (markdown, json, plots) from docs/results/records")
    try:
        args = p.parse_args(argv)
        if args.cmd == "evaluate":
            from advlab import zoo
            _check_n(e, zoo.REGISTRY[args.name].dataset, args.n)
        elif args.cmd == "defense-report":
            _check_n(r, "fashion_mnist", args.n)
    except SystemExit as exc:     # --help (0), or a bad option whose one-line error is already printed (2)
        return exc.code if isinstance(exc.code, int) else 0
    # the command as a user would type it, for the records (also under `python -m advlab.cli` and main([...]))
    args.command = "advlab " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    return _run(args)


def _run(args) -> int:
    """args.func(args); the errors a user can act on become one line on stderr and exit status 2."""
    import warnings
    from advlab import data, zoo
    errors = (ValueError, zoo.NotTrainedError, zoo.ChecksumError, data.DataNotFoundError)

    def one_line(text) -> str:
        return " ".join(str(text).split())

    def show(message, category, *_args, **_kw):   # warnings as one line too
        print(f"advlab {args.cmd}: {category.__name__}: {one_line(message)}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            return args.func(args)
        except errors as exc:
            if os.environ.get("ADVLAB_TRACEBACK"):
                raise
            print(f"advlab {args.cmd}: {one_line(exc)}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
