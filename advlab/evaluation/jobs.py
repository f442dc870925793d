"""The long evaluations that `advlab evaluate` and `advlab defense-report` start.

  evaluate_zoo_model   robust accuracy of a zoo model on a fixed test subset, in chunks saved as they
                       finish (an interrupted run resumes), optionally recorded
  zoo_defense_report   clean / grey-box / adaptive / sanity report of a registered purifier, written
                       as json and markdown with its measured purification throughput

Both take the parsed command-line namespace (the CLI only parses and calls).
"""
from __future__ import annotations

import json
from pathlib import Path


def evaluate_zoo_model(args) -> int:
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


def zoo_defense_report(args) -> int:
    """`advlab defense-report NAME`: evaluate.defense_report of a zoo purifier on a fixed test subset,
    written as json and markdown (with the purifier's measured images/s); --record adds the summary
    to the manifest record of the purifier's generative model."""
    import time
    import torch
    from advlab import attacks, data, evaluate, purifiers, zoo
    from advlab.training.loop import resolve_device
    from advlab.training.zoo_entry import parse_setting
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cls = purifiers.get(args.name)
    settings = dict(parse_setting(t) for t in args.set)
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
