"""The zoo's front end, in the shape RobustBench users know: list by robust accuracy, load by name,
register one's own checkpoint.

    from advlab import zoo
    for row in zoo.list(dataset="fashion_mnist", threat_model="Linf"):
        print(row["name"], row["clean"], row["robust"], row["attack"])
    clf = zoo.load_model("fmnist/pgd-at", dataset="fashion_mnist", threat_model="Linf")
    defense = zoo.load_model("lqvae+fmnist/cnn")          # a purifier in front of its classifier
    zoo.register("me/cnn", my_model, root="my-zoo")        # then ADVLAB_ZOO=my-zoo, or root="my-zoo"

The accuracies come from the evaluation records (advlab.evaluation.records), never from this file:
"robust" is the per-image worst case of the adaptive ensemble where it has run, else the lowest
accuracy any recorded attack reached (an upper bound; `attack` says which). Only the records of a
model's current weights count (zoo.same_weights decides, for every zoo model a record names).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

DATASETS = {"fashion_mnist": "fmnist"}     # dataset -> the prefix of its zoo names
THREAT_MODELS = ("Linf", "L2")


def _check(dataset: str, threat_model: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"dataset: the zoo has models for {sorted(DATASETS)}, got {dataset!r}")
    if threat_model not in THREAT_MODELS:
        raise ValueError(f"threat_model: one of {THREAT_MODELS}, got {threat_model!r}")


def list_models(dataset: str = "fashion_mnist", threat_model: str = "Linf", kind: str = "all",
                records_root: str | Path | None = None) -> list[dict]:
    """The zoo's classifiers and the defenses built on them, most robust first.

    Each row: name (what load_model takes), kind ("classifier" or "defense"), clean and robust
    accuracy (fractions, None where nothing is recorded), attack (the column that gave `robust`:
    "worst case" for the adaptive ensemble), n_clean / n_robust, ci95 (worst case only), trained
    (False for a registered classifier whose weights are missing). kind: "all", "classifier", "defense".
    """
    from advlab import zoo
    from advlab.evaluation import leaderboard, records
    _check(dataset, threat_model)
    if kind not in ("all", "classifier", "defense"):
        raise ValueError(f"kind: 'all', 'classifier' or 'defense', got {kind!r}")
    prefix = DATASETS[dataset] + "/"
    try:
        board = leaderboard.build(records_root, reports=None, threat_model=threat_model, current_only=True)
        table = board["table"]
    except records.RecordError:        # no records folder at all: the models are still listed
        table = {}
    rows = []

    def row(name, kind_, cells):
        robust = None
        if "worst case" in cells:
            robust = ("worst case", cells["worst case"])
        else:
            robust = leaderboard.strongest_single(cells)
        clean = cells.get("clean")
        return {"name": name, "kind": kind_, "clean": clean["acc"] if clean else None,
                "n_clean": clean["n"] if clean else None,
                "robust": robust[1]["acc"] if robust else None, "n_robust": robust[1]["n"] if robust else None,
                "attack": robust[0] if robust else None, "ci95": robust[1].get("ci95") if robust else None,
                "device": robust[1].get("device") if robust else None}

    if kind in ("all", "classifier"):
        for name in zoo.names():
            entry = zoo._entry(name)
            if entry.dataset != dataset or entry.builder is not None:    # generators are parts, not classifiers
                continue
            cells = table.get(name) or table.get(f"{name} (undefended)") or {}
            r = row(name, "classifier", cells)
            try:
                zoo.info(name)
                r["trained"] = True
            except zoo.NotTrainedError:
                r["trained"] = False
            rows.append(r)
    if kind in ("all", "defense"):
        for entry, cells in table.items():
            if "+" in entry and entry.split("+", 1)[1].startswith(prefix):
                rows.append(row(entry, "defense", cells) | {"trained": True})
    return sorted(rows, key=lambda r: (r["robust"] is None, -(r["robust"] or 0.0), r["name"]))


def load_model(name: str, dataset: str = "fashion_mnist", threat_model: str = "Linf",
               device: str | torch.device = "cpu", root: str | Path | None = None) -> nn.Module:
    """A zoo model by name, in eval mode, on `device`: a classifier ("fmnist/pgd-at", or one registered
    in a user zoo) or a defense "PURIFIER+CLASSIFIER" ("lqvae+fmnist/cnn": the purifier from the zoo in
    front of that classifier). Images in [0, 1], logits out; normalisation is inside the model.
    threat_model only checks the name (the zoo's robust models are trained for Linf eps 0.1)."""
    from advlab import purifiers, zoo
    _check(dataset, threat_model)
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: a zoo name such as 'fmnist/pgd-at' or 'lqvae+fmnist/cnn', got {name!r}")
    if "+" in name:
        purifier, classifier = name.split("+", 1)
        if purifier not in purifiers.REGISTRY:
            raise ValueError(f"name: unknown purifier {purifier!r} in {name!r}; purifiers: {purifiers.names()}")
        if not classifier.startswith(DATASETS[dataset] + "/"):
            raise ValueError(f"name: {classifier!r} is not a {dataset} model (dataset={dataset!r})")
        return purifiers.get(purifier).from_zoo(dataset, classifier=zoo.load(classifier, device, root), device=device)
    if zoo._entry(name, root).dataset != dataset:
        raise ValueError(f"name: {name!r} is not a {dataset} model (dataset={dataset!r})")
    return zoo.load(name, device=device, root=root)


def register(name: str, model: nn.Module, *, root: str | Path | None = None, arch: str | None = None,
             arch_kwargs: dict | None = None, dataset: str = "fashion_mnist", description: str = "",
             metrics: dict | None = None, dtype: torch.dtype | None = None) -> dict:
    """Add one's own classifier to a user zoo folder so that `load_model(name)` finds it; returns its record.

    root: the user zoo (default: the first $ADVLAB_ZOO folder); it is created if missing, and other
    sessions find the model once ADVLAB_ZOO names that folder (it stacks on top of the bundled zoo).
    arch: an advlab.models architecture ("cnn", "mlp", "vgg", "resnet18", "wrn"; default: inferred
    from the model's class) or "module:function" building it, with arch_kwargs (loading it later
    needs that module imported first, unless it is advlab's: a zoo folder never makes advlab import
    code by itself). The weights are
    stored as safetensors with their sha256 (never pickled) and must load back into the
    architecture exactly. metrics: what you measured (e.g. {"clean_acc": 0.91}), kept in the record;
    the leaderboard's numbers come from evaluation records, not from here.
    """
    from advlab import models, zoo
    from advlab.zoo.entries import REGISTRY, ZooEntry
    if not isinstance(name, str) or name.count("/") != 1 or any(c in name for c in " \\:+") or ".." in name:
        raise ValueError(f"name: 'owner/model' without spaces, '+', ':' or '..', got {name!r}")
    if name in REGISTRY:
        raise ValueError(f"name: {name!r} is a bundled zoo model; choose another name for your checkpoint")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: an nn.Module, got {type(model).__name__}")
    if dataset not in DATASETS:
        raise ValueError(f"dataset: one of {sorted(DATASETS)}, got {dataset!r}")
    if root is None:
        if not zoo.user_zoo_dirs():
            raise ValueError("root: give the folder of your zoo (register(..., root='my-zoo')) or set ADVLAB_ZOO; "
                             "the bundled zoo is not written to")
        root = zoo.user_zoo_dirs()[0]
    root = Path(root).expanduser()
    if root.resolve() == zoo.ZOO_DIR.resolve():
        raise ValueError(f"root: {root} is the bundled zoo; register into a folder of your own")
    if arch is None:
        arch = next((a for a, cls in models.ARCHITECTURES.items() if type(model) is cls), None)
        if arch is None:
            raise ValueError(f"arch: {type(model).__name__} is not an advlab.models architecture; pass "
                             "arch='module:function' (a function building it, with arch_kwargs)")
    kwargs = dict(arch_kwargs or {})
    builder = arch if ":" in arch else None
    if builder is None and arch not in models.ARCHITECTURES:
        raise ValueError(f"arch: one of {sorted(models.ARCHITECTURES)} or 'module:function', got {arch!r}")
    entry = ZooEntry(name, arch, dataset, description, arch_kwargs=kwargs, builder=builder,
                     command_text=f"zoo.register({name!r}, model, root=...) with your checkpoint")
    REGISTRY[name] = entry         # while it is checked and written; afterwards read from its zoo's manifest
    try:
        return _check_and_save(entry, model, root, dtype, metrics)
    finally:
        REGISTRY.pop(name, None)


def _check_and_save(entry, model: nn.Module, root: Path, dtype, metrics) -> dict:
    from advlab import zoo
    name, arch, kwargs, builder = entry.name, entry.arch, entry.arch_kwargs, entry.builder
    fresh = zoo.build(name)
    try:
        fresh.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise ValueError(f"arch / arch_kwargs: {arch!r} with {kwargs} builds a model whose weights do not match "
                         f"this one's ({detail})") from None
    record_entry = {"arch": arch, "dataset": entry.dataset, "description": entry.description, "arch_kwargs": kwargs,
                    "builder": builder}
    root.mkdir(parents=True, exist_ok=True)
    config = kwargs if builder else {"arch_kwargs": kwargs}
    device = next((str(p.device) for p in model.parameters()), "cpu")
    return zoo.save(name, model, config, dict(metrics or {}), entry.command, root=root, device=device,
                    dtype=dtype, extra={"entry": record_entry})
