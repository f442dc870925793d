"""Train a zoo entry from its registered profile and save it into the zoo with the exact command.

`advlab train NAME` ends here: the CLI parses the arguments, the entry's trainer module builds its
config class and training function, and `train_and_save` does the rest (profile overrides,
resumable checkpoint keyed by the config, saving with the command, printing the summary).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
from pathlib import Path


def parse_setting(text: str) -> tuple[str, object]:
    """'steps=200' -> ('steps', 200): the value is read as json when it parses, else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--set: expected NAME=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def checkpoint_key(config: dict) -> str:
    """The key of a training run's checkpoint (build/checkpoints/NAME_KEY.pt): a digest of its exact config, the
    dict that the zoo's manifest stores as the entry's "config", so a carried state can be matched to its entry."""
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]


def train_and_save(entry, args, config_cls, train_fn, summary=("clean_acc",)) -> int:
    """Build config_cls from the entry's profile, train with train_fn(cfg, checkpoint=...) -> (model,
    metrics) and save the weights with the exact command into the zoo (or args.out), printing the
    metrics named in `summary`. Under torchrun only rank 0 saves."""
    from advlab import zoo
    from advlab.training import loop as train
    overrides = dict(entry.train)
    if args.profile == "quick":
        overrides.update(entry.train_quick)
    kwargs = dict(dataset=entry.dataset, device=args.device, **overrides)
    if "arch_kwargs" in {f.name for f in dataclasses.fields(config_cls)}:   # classifiers: TrainConfig and kin
        kwargs |= dict(arch=entry.arch, arch_kwargs=dict(entry.arch_kwargs))
    else:                                                                   # generative configs hold the sizes
        kwargs |= dict(entry.arch_kwargs)
    kwargs |= dict(parse_setting(t) for t in getattr(args, "set", None) or [])
    cfg = config_cls(**kwargs)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    out = args.out or (None if args.profile == "full" else "build/zoo")
    # the checkpoint is keyed by the exact config, so a run only ever resumes itself
    key = checkpoint_key(train.config_dict(cfg))
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


def train_entry(args) -> int:
    """`advlab train NAME ...`: train the zoo entry args.name with its own trainer (default: the
    classifier loop of advlab.training.loop)."""
    import importlib
    import sys
    from advlab import zoo
    from advlab.training import loop
    entry = zoo.REGISTRY.get(args.name)
    if entry is None:
        print(f"advlab train: unknown zoo model {args.name!r}; available: {zoo.names()}", file=sys.stderr)
        return 2
    if entry.trainer:
        return importlib.import_module(entry.trainer).train_zoo_entry(entry, args)
    return train_and_save(entry, args, loop.TrainConfig, loop.train)
