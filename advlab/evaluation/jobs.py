"""The long evaluations that `advlab evaluate` and `advlab defense-report` start.

  evaluate_zoo_model   robust accuracy of a zoo model on a fixed test subset; the adversarial images
                       are crafted in chunks saved as they finish (evaluation.adversarial_set: an
                       interrupted run resumes), optionally recorded (evaluation.records)
  zoo_defense_report   clean / grey-box / adaptive / sanity report of a registered purifier, written
                       as json and markdown with its measured purification throughput, optionally recorded

Both take the parsed command-line namespace (the CLI only parses and calls).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from advlab.validate import device_name


def _check_settings(cls, settings: dict) -> None:
    """ValueError naming the first --set NAME that the purifier's constructor does not take."""
    import inspect
    params = inspect.signature(cls).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    known = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY or p.default is not p.empty]
    for key in settings:
        if key not in params:
            raise ValueError(f"--set {key}: not a setting of {cls.__name__}; its settings: {', '.join(known)}")


def evaluate_zoo_model(args) -> int:
    """Robust accuracy of a zoo model on a fixed test subset, crafted in chunks of args.chunk that are
    saved as they finish under args.cache (an interrupted run resumes); --record writes the result to
    the records (docs/results/records/NAME/KEY.json)."""
    import torch
    from advlab import data, zoo
    from advlab.attacks import presets
    from advlab.evaluation import adversarial_set, records
    from advlab.metrics import accuracy
    from advlab.training.loop import resolve_device
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rec = zoo.info(args.name)
    model = zoo.load(args.name, device=device)
    dataset = rec["config"]["dataset"]
    x, y = data.batch(dataset, "test", n=args.n, seed=args.seed, device=device)
    if args.attack == "pgd":
        atk = presets.pgd(args.eps, steps=args.steps, alpha=args.alpha, seed=args.seed)
        key = f"pgd{args.steps}_linf{args.eps:g}"
    else:
        atk = presets.autoattack(args.eps, "standard", n_classes=int(y.max()) + 1, seed=args.seed)
        key = f"autoattack_linf{args.eps:g}"
    subset = {"dataset": dataset, "split": "test", "n": len(x), "seed": args.seed}
    x_adv = adversarial_set.craft(model, x, y, atk, model_sha256=rec["sha256"], subset=subset, chunk=args.chunk,
                                  folder=getattr(args, "cache", None) or "build/eval", name=args.name)
    clean = robust = 0
    for i in range(0, len(x), args.chunk):   # counted per chunk, in the chunks' batches, as the chunks were made
        xc, xa, yc = x[i:i + args.chunk], x_adv[i:i + args.chunk], y[i:i + args.chunk]
        clean += round(accuracy(model, xc, yc) * len(xc))
        robust += round(accuracy(model, xa, yc) * len(xc))
    n = len(x)
    result = {"attack": repr(atk), "n": n, "test_subset_seed": args.seed, "chunk": args.chunk,
              "clean_acc": clean / n, "robust_acc": robust / n}
    print(json.dumps({args.name: {key: result}}, indent=2))
    if args.record:
        path = records.record_path(args.name, key)
        records.write_record("model", args.name, key, result, attack=repr(atk), n=n, seed=args.seed,
                             device=device_name(device), models={args.name: rec["sha256"]},
                             command=getattr(args, "command", None))
        print(f"recorded: {path}", file=sys.stderr)   # stdout stays the json
    return 0


def zoo_defense_report(args) -> int:
    """`advlab defense-report NAME`: the defense report of a zoo purifier on a fixed test subset,
    written as json and markdown (with the purifier's measured images/s); the grey-box attack on the
    classifier is crafted through evaluation.adversarial_set (cached in args.cache); --record writes
    the summary to the records (docs/results/records/NAME+CLASSIFIER/defense_report*.json)."""
    import time
    import torch
    from advlab import data, purifiers, zoo
    from advlab.attacks import presets
    from advlab.evaluation import adversarial_set, records
    from advlab.evaluation.report import defense_report, format_report, report_rows, save_report
    from advlab.training.loop import resolve_device
    from advlab.training.zoo_entry import parse_setting
    from advlab.zoo import atomic
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cls = purifiers.get(args.name)
    settings = dict(parse_setting(t) for t in args.set)
    _check_settings(cls, settings)
    defense = cls.from_zoo("fashion_mnist", classifier=args.classifier, device=device, **settings)
    classifier = args.classifier or cls.ZOO["fashion_mnist"]["classifier"]
    purifier = next(v for k, v in cls.ZOO["fashion_mnist"].items() if k != "classifier")
    x, y = data.batch("fashion_mnist", "test", n=args.n, seed=args.seed, device=device)
    attack = presets.pgd(args.eps, steps=args.steps, alpha=args.alpha, seed=args.seed)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rank = 0
    if getattr(args, "clean_only", False):
        from advlab.evaluation import shard
        rank, _ = shard.init(device)          # (0, 1) outside torchrun
    seconds, xs = None, x[:args.speed_n]
    if rank == 0:
        with torch.no_grad():                 # throughput of purify alone, after one warm-up call
            defense.purify(xs[:8]); sync()
            t0 = time.perf_counter(); defense.purify(xs); sync()
            seconds = time.perf_counter() - t0
    dev_name = device_name(device)
    if args.speed_only:
        print(f"{defense.describe()}: purify {len(xs) / seconds:.3g} images/s on {dev_name} ({len(xs)} images)")
        return 0
    shas = {m: zoo.info(m)["sha256"] for m in (purifier, classifier)}
    if getattr(args, "clean_only", False):
        return _clean_only(args, defense, x, y, classifier, purifier, shas, dev_name, len(xs) / seconds if rank == 0
                           else None)
    subset = {"dataset": "fashion_mnist", "split": "test", "n": len(x), "seed": args.seed}
    x_adv = adversarial_set.craft(defense.classifier, x, y, attack, model_sha256=shas[classifier], subset=subset,
                                  folder=getattr(args, "cache", None), name=classifier)
    rep = defense_report(defense, x, y, attack=attack, x_adv=x_adv, eot_iter=args.eot, backward=args.backward,
                         sanity_n=args.sanity_n, adaptive_n=args.adaptive_n)
    rep["purify_speed"] = {"images_per_s": round(len(xs) / seconds, 1), "n": len(xs), "device": dev_name}
    rep["test_subset"] = {"n": len(x), "seed": args.seed, "classifier": classifier}
    rep["command"] = getattr(args, "command", None)
    tag = f"_{args.backward}" if args.backward else ""
    out = Path(args.out) / f"{args.name}{tag}_{classifier.replace('/', '__')}_n{len(x)}_seed{args.seed}"
    save_report(rep, out.with_suffix(".json"))
    text = format_report(rep) + f"\n\npurify: {rep['purify_speed']['images_per_s']:g} images/s on {dev_name}\n"
    atomic.write_text(out.with_suffix(".md"), text)
    print(text)
    print(f"written: {out}.json and .md")
    if args.record:
        summary = {"defense": rep["defense"], "classifier": classifier, "test_subset_seed": args.seed,
                   "device": dev_name, "purify_images_per_s": rep["purify_speed"]["images_per_s"],
                   "command": rep["command"]}
        summary |= {row["setting"]: {"acc": row["acc"], "n": row["n"], "attack": row["attack"]}
                    for row in report_rows(rep)}
        summary["sanity_passed"] = rep["sanity"]["passed"]
        name, protocol = f"{args.name}+{classifier}", f"defense_report{tag}_linf{args.eps:g}"
        records.write_record("defense", name, protocol, summary, attack=rep["grey_box"]["attack"], n=len(x),
                             seed=args.seed, device=dev_name, models=shas, command=rep["command"],
                             evaluations_key=[purifier, f"defense_report_{args.name}{tag}_{classifier}_linf{args.eps:g}"])
        print(f"recorded: {records.record_path(name, protocol)}", file=sys.stderr)
    return 0


def clean_accuracy(defense, x, y, seed: int = 0, chunk: int = 100, state_dir=None, progress: bool = True) -> dict:
    """Per-image clean correctness of `defense` on (x, y), in chunks of `chunk` images saved as they finish
    under state_dir (evaluation.shard.ChunkStore: a rerun resumes; None: nothing saved) and shared out
    among the ranks under torchrun. Each chunk reseeds the defense from (seed, chunk start), so a chunk's
    result depends on its images and the seed only: any order, any number of processes, the same answer.
    Returns on rank 0 {"correct": [bool] * N, "seconds": defense time summed over the chunks computed here
    and before (per process), "acc", "n"}; None on the other ranks."""
    import time
    import torch
    from tqdm.auto import tqdm
    from advlab.evaluation import shard
    from advlab.evaluation.adaptive import _fingerprint_module
    from advlab.evaluation.adversarial_set import fingerprint
    from advlab.validate import eval_mode
    name = defense.describe() if hasattr(defense, "describe") else type(defense).__name__
    key = {"defense": name, "data": fingerprint(x, y), "n": len(x), "seed": seed, "chunk": chunk,
           "weights": _fingerprint_module(defense)}
    store = shard.ChunkStore(state_dir, key, "clean_" + name.split("(")[0]) if state_dir else None
    rank, world = shard.world()
    mine = shard.my_chunks(list(range(0, len(x), chunk)), rank, world)
    done = {}
    bar = tqdm(total=sum(len(x[s:s + chunk]) for s in mine), unit="img", disable=not progress,
               desc=f"clean {name.split('(')[0]}" + (f" rank {rank}/{world}" if world > 1 else ""))
    with eval_mode(defense), torch.no_grad():
        for s in mine:
            data = store.load(s) if store else None
            if data is None:
                if hasattr(defense, "reseed"):
                    defense.reseed(int(shard.digest([seed, s, "clean"]), 16))
                t0 = time.perf_counter()
                pred = defense(x[s:s + chunk]).argmax(1)
                data = {"correct": (pred == y[s:s + chunk]).tolist(), "seconds": time.perf_counter() - t0}
                if store:
                    store.save(s, data)
            done[str(s)] = data
            bar.update(len(data["correct"]))
    bar.close()
    merged = shard.gather(done)
    if merged is None:
        return None
    correct = [c for s in sorted(merged, key=int) for c in merged[s]["correct"]]
    return {"correct": correct, "acc": sum(correct) / len(correct), "n": len(correct),
            "seconds": round(sum(d["seconds"] for d in merged.values()), 1)}


def _clean_only(args, defense, x, y, classifier, purifier, shas, dev_name, purify_speed) -> int:
    """`defense-report --clean-only`: the clean rows (classifier alone, defense) and the purify throughput,
    the defense's row in resumable chunks (clean_accuracy); for defenses whose every row costs hours."""
    import torch
    from advlab.evaluation import records
    from advlab.metrics import accuracy, wilson
    from advlab.zoo import atomic
    res = clean_accuracy(defense, x, y, args.seed, args.chunk, args.cache or "build/clean")
    if res is None:       # not rank 0 under torchrun
        return 0
    with torch.no_grad():
        clf_acc = accuracy(defense.classifier, x, y)
    k, n = sum(res["correct"]), res["n"]
    rows = {"clean (classifier alone)": {"acc": clf_acc, "n": n, "attack": "-"},
            "clean (defense)": {"acc": res["acc"], "n": n, "attack": "-", "ci95": wilson(k, n)}}
    summary = {"defense": defense.describe(), "classifier": classifier, "test_subset_seed": args.seed,
               "device": dev_name, "purify_images_per_s": round(purify_speed, 3), "purify_speed_n": args.speed_n,
               "defense_seconds_per_image": round(res["seconds"] / n, 3), "command": getattr(args, "command", None)}
    summary |= rows | {"correct": res["correct"]}
    lo, hi = rows["clean (defense)"]["ci95"]
    text = (f"**{defense.describe()}: clean accuracy on {n} test images (seed {args.seed})**\n\n"
            f"| setting | accuracy | images |\n|---|---:|---:|\n"
            f"| clean (classifier alone: {classifier}) | {100 * clf_acc:.2f}% | {n} |\n"
            f"| clean (defense) | {100 * res['acc']:.2f}% ({k}/{n}; 95% CI {100 * lo:.1f} to {100 * hi:.1f}) | {n} |\n\n"
            f"purify: {purify_speed:.3g} images/s on {dev_name} ({args.speed_n} images); the defense's forward took "
            f"{res['seconds'] / n:.2f} s per image over the chunks (per process)\n\nCommand: `{summary['command']}`\n")
    out = Path(args.out) / f"{args.name}_{classifier.replace('/', '__')}_clean_n{n}_seed{args.seed}"
    atomic.write_json(out.with_suffix(".json"), summary)
    atomic.write_text(out.with_suffix(".md"), text)
    print(text)
    print(f"written: {out}.json and .md")
    if args.record:
        name, protocol = f"{args.name}+{classifier}", "defense_report_clean"
        records.write_record("defense", name, protocol, summary, attack=None, n=n, seed=args.seed, device=dev_name,
                             models=shas, command=summary["command"],
                             evaluations_key=[purifier, f"defense_report_clean_{args.name}_{classifier}"])
        print(f"recorded: {records.record_path(name, protocol)}", file=sys.stderr)
    return 0
