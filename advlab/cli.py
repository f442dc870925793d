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
import dataclasses
import hashlib
import json
import shlex
import sys
from pathlib import Path


def _train(args) -> int:
    from advlab import train, zoo
    entry = zoo.REGISTRY.get(args.name)
    if entry is None:
        print(f"advlab train: unknown zoo model {args.name!r}; available: {zoo.names()}", file=sys.stderr)
        return 2
    if entry.trainer:
        import importlib
        return importlib.import_module(entry.trainer).train_zoo_entry(entry, args)
    return train_and_save(entry, args, train.TrainConfig, train.train)


def train_and_save(entry, args, config_cls, train_fn, summary=("clean_acc",)) -> int:
    """Build config_cls from the entry's profile, train with train_fn(cfg, checkpoint=...) -> (model,
    metrics) and save the weights with the exact command into the zoo (or args.out), printing the
    metrics named in `summary`. Under torchrun only rank 0 saves."""
    from advlab import train, zoo
    overrides = dict(entry.train)
    if args.profile == "quick":
        overrides.update(entry.train_quick)
    kwargs = dict(dataset=entry.dataset, device=args.device, **overrides)
    if "arch_kwargs" in {f.name for f in dataclasses.fields(config_cls)}:   # classifiers: TrainConfig and kin
        kwargs |= dict(arch=entry.arch, arch_kwargs=dict(entry.arch_kwargs))
    else:                                                                   # generative configs hold the sizes
        kwargs |= dict(entry.arch_kwargs)
    kwargs |= dict(_setting(t) for t in getattr(args, "set", None) or [])
    cfg = config_cls(**kwargs)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    out = args.out or (None if args.profile == "full" else "build/zoo")
    # the checkpoint is keyed by the exact config, so a run only ever resumes itself
    key = hashlib.sha1(json.dumps(train.config_dict(cfg), sort_keys=True).encode()).hexdigest()[:10]
    ckpt_dir = Path(args.out) / "checkpoints" if args.out else Path("build/checkpoints")
    model, metrics = train_fn(cfg, checkpoint=ckpt_dir / f"{entry.name.replace('/', '__')}_{key}.pt")
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return 0
    metrics = {k: v for k, v in metrics.items() if k != "history"} | {"history": metrics["history"]}
    device = str(train.resolve_device(args.device))
    sets = getattr(args, "set", None) or []
    command = getattr(args, "command", None) or \
        f"advlab train {entry.name} --profile {args.profile}" + "".join(f" --set {shlex.quote(t)}" for t in sets)
    rec = zoo.save(entry.name, model, train.config_dict(cfg), metrics, command, root=out, device=device)
    print(json.dumps({k: rec[k] for k in ("file", "sha256", "size_bytes")} | {k: metrics[k] for k in summary},
                     indent=2))
    return 0


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
    """Robust accuracy of a zoo model on a fixed test subset, in chunks saved as they finish (an
    interrupted run resumes); --record adds the result to the model's manifest record."""
    import torch
    from advlab import attacks, data, evaluate, zoo
    if args.threads:
        torch.set_num_threads(args.threads)
    rec = zoo.info(args.name)
    model = zoo.load(args.name, device=args.device)
    x, y = data.batch(rec["config"]["dataset"], "test", n=args.n, seed=args.seed, device=args.device)
    if args.attack == "pgd":
        atk = attacks.PGD(eps=args.eps, alpha=args.alpha, steps=args.steps, random_start=True, seed=args.seed)
        key = f"pgd{args.steps}_linf{args.eps:g}"
    else:
        atk = attacks.AutoAttack(eps=args.eps, norm="linf", version="standard", n_classes=int(y.max()) + 1,
                                 seed=args.seed)
        key = f"autoattack_linf{args.eps:g}"
    state_path = Path("build/eval") / f"{args.name.replace('/', '__')}_{key}_n{len(x)}_seed{args.seed}.json"
    state_path.parent.mkdir(parents=True, exist_ok=True)
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state.get("sha256") != rec["sha256"] or state.get("attack") != repr(atk):
        state = {"sha256": rec["sha256"], "attack": repr(atk), "chunks": {}}
    from tqdm.auto import tqdm
    for i in tqdm(range(0, len(x), args.chunk), desc=f"{args.name} {key}"):
        if str(i) in state["chunks"]:
            continue
        xc, yc = x[i:i + args.chunk], y[i:i + args.chunk]
        state["chunks"][str(i)] = {"n": len(xc), "clean": round(evaluate.accuracy(model, xc, yc) * len(xc)),
                                   "robust": round(evaluate.robust_accuracy(model, xc, yc, atk) * len(xc))}
        state_path.write_text(json.dumps(state, indent=1))
    n = sum(c["n"] for c in state["chunks"].values())
    result = {"attack": repr(atk), "n": n, "test_subset_seed": args.seed, "chunk": args.chunk,
              "clean_acc": sum(c["clean"] for c in state["chunks"].values()) / n,
              "robust_acc": sum(c["robust"] for c in state["chunks"].values()) / n}
    print(json.dumps({args.name: {key: result}}, indent=2))
    if args.record:
        zoo.record_evaluation(args.name, key, result)
    return 0


DEFENSES = {"defense-gan": "DefenseGAN", "vaegan": "VAEGANPurifier", "lqvae": "LQVAE"}


def _setting(text: str) -> tuple[str, object]:
    """'steps=200' -> ('steps', 200): the value is read as json when it parses, else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--set: expected NAME=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _defense_report(args) -> int:
    """`advlab defense-report NAME`: evaluate.defense_report of a zoo purifier on a fixed test subset,
    written as json and markdown (with the purifier's measured images/s); --record adds the summary
    to the manifest record of the purifier's generative model."""
    import time
    import torch
    from advlab import attacks, data, defenses, evaluate, train, zoo
    if args.threads:
        torch.set_num_threads(args.threads)
    device = train.resolve_device(args.device)
    cls = getattr(defenses, DEFENSES[args.name])
    settings = dict(_setting(t) for t in args.set)
    defense = cls.from_zoo("fashion_mnist", classifier=args.classifier, device=device, **settings)
    classifier = args.classifier or cls.ZOO["fashion_mnist"]["classifier"]
    purifier = next(v for k, v in cls.ZOO["fashion_mnist"].items() if k != "classifier")
    x, y = data.batch("fashion_mnist", "test", n=args.n, seed=args.seed, device=device)
    attack = attacks.PGD(eps=args.eps, alpha=args.alpha, steps=args.steps, random_start=True, seed=args.seed)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():                     # throughput of purify alone, after one warm-up call
        xs = x[:args.speed_n]
        defense.purify(xs[:8]); sync()
        t0 = time.perf_counter(); defense.purify(xs); sync()
        seconds = time.perf_counter() - t0
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    if args.speed_only:
        print(f"{defense.describe()}: purify {len(xs) / seconds:.1f} images/s on {device_name} ({len(xs)} images)")
        return 0
    rep = evaluate.defense_report(defense, x, y, attack=attack, eot_iter=args.eot, backward=args.backward,
                                  sanity_n=args.sanity_n, adaptive_n=args.adaptive_n)
    rep["purify_speed"] = {"images_per_s": round(len(xs) / seconds, 1), "n": len(xs), "device": device_name}
    rep["test_subset"] = {"n": len(x), "seed": args.seed, "classifier": classifier}
    rep["command"] = getattr(args, "command", None)
    tag = f"_{args.backward}" if args.backward else ""
    out = Path(args.out) / f"{args.name}{tag}_{classifier.replace('/', '__')}_n{len(x)}_seed{args.seed}"
    evaluate.save_report(rep, out.with_suffix(".json"))
    text = evaluate.format_report(rep) + f"\n\npurify: {rep['purify_speed']['images_per_s']:g} images/s on {device_name}\n"
    out.with_suffix(".md").write_text(text)
    print(text)
    print(f"written: {out}.json and .md")
    if args.record:
        summary = {"defense": rep["defense"], "classifier": classifier, "test_subset_seed": args.seed,
                   "device": device_name, "purify_images_per_s": rep["purify_speed"]["images_per_s"],
                "command": rep["command"]}
        summary |= {row["setting"]: {"acc": row["acc"], "n": row["n"], "attack": row["attack"]}
                    for row in evaluate.report_rows(rep)}
        summary["sanity_passed"] = rep["sanity"]["passed"]
        zoo.record_evaluation(purifier, f"defense_report_{args.name}{tag}_{classifier}_linf{args.eps:g}", summary)
    return 0


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
    r.add_argument("name", choices=sorted(DEFENSES))
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
