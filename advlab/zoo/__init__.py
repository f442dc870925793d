"""The pretrained model zoo: a plain registry of named models.

    clf = zoo.load("fmnist/cnn")          # eval-mode nn.Module, [0,1] images -> logits

Weights live in advlab/zoo/weights/*.safetensors; advlab/zoo/manifest.json records for each
entry its sha256, config, the exact `advlab train` command, metrics, training history, device,
date and size. A record may say that its weights are stored in float16 ("dtype", with the
fp32 file they were converted from under "converted_from" and the re-measured metrics under
"conversion_check"): `load` upcasts them into the float32 model, and `same_weights` counts the
fp32 original as the same model, so evaluations recorded before the conversion stay attached to it.
`load` refuses a file whose sha256 differs from the manifest's, a file outside the
zoo folder and weights that do not fit the recorded architecture (weights are never unpickled).
Evaluations of the models are not kept here: they are records under docs/results/records/
(advlab.evaluation.records).

User zoos stack on top of the bundled one: ADVLAB_ZOO=DIR (or DIR1:DIR2, os.pathsep-separated) is
searched first, model by model, then the bundled zoo; new weights (`advlab train`, `register`) are
written to the first folder, and the evaluation records follow to DIR/records. `root=DIR` in any
function means that folder alone.

The front end in the shape RobustBench users know (advlab.zoo.front):

    zoo.list(dataset="fashion_mnist", threat_model="Linf")   # rows with clean and robust accuracy
    clf = zoo.load_model("fmnist/pgd-at", dataset="fashion_mnist", threat_model="Linf")
    zoo.register("me/my-cnn", model, root="my-zoo")          # one's own checkpoint, loadable by name
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
from pathlib import Path

import torch
import torch.nn as nn

ZOO_DIR = Path(__file__).resolve().parent


class ChecksumError(RuntimeError):
    """A weights file does not match the sha256 recorded in the manifest."""


class NotTrainedError(FileNotFoundError):
    """A registered zoo entry has no weights yet; the message says which command trains it."""


class ZooRecordError(ValueError):
    """The manifest, or a model's record in it, cannot be used: invalid json, no sha256, a weights file
    outside the zoo folder, or weights that do not fit the architecture the record's config builds."""


from advlab.zoo.entries import REGISTRY, ZooEntry  # noqa: E402,F401 (the registry)


def user_zoo_dirs() -> list[Path]:
    """The user zoo folders named by $ADVLAB_ZOO (os.pathsep-separated), in search order."""
    return [Path(d).expanduser() for d in os.environ.get("ADVLAB_ZOO", "").split(os.pathsep) if d.strip()]


def zoo_dirs(root: str | Path | None = None) -> list[Path]:
    """The folders searched for a model, first match wins: `root` alone when given; else the folders
    of $ADVLAB_ZOO (os.pathsep-separated), then the bundled zoo, unless ADVLAB_ZOO_BUNDLED=0 (tests
    that need a zoo without the bundled models)."""
    if root is not None:
        return [Path(root).expanduser()]
    dirs = user_zoo_dirs()
    bundled = os.environ.get("ADVLAB_ZOO_BUNDLED", "1") != "0"
    if not dirs and not bundled:
        raise ValueError("ADVLAB_ZOO_BUNDLED=0 leaves no zoo: set ADVLAB_ZOO=DIR as well")
    return dirs + [ZOO_DIR] * bundled


def _user_entries(root: str | Path | None = None) -> dict[str, ZooEntry]:
    """Entries registered with `register` in `root`, else in the stacked user zoos (their records
    carry the entry)."""
    out: dict[str, ZooEntry] = {}
    dirs = zoo_dirs(root) if root is not None else user_zoo_dirs()
    for d in reversed(dirs):   # the first folder wins
        try:
            man = read_manifest(d)
        except ZooRecordError:
            continue
        for name, rec in man.items():
            if isinstance(rec, dict) and isinstance(rec.get("entry"), dict) and name not in REGISTRY:
                e = rec["entry"]
                out[name] = ZooEntry(name, e.get("arch", ""), e.get("dataset", "fashion_mnist"),
                                     e.get("description", ""), arch_kwargs=dict(e.get("arch_kwargs") or {}),
                                     builder=e.get("builder"), command_text=rec.get("command"))
    return out


def names() -> list[str]:
    """The names of the registry's entries and of the entries registered in the stacked user zoos."""
    return sorted(set(REGISTRY) | set(_user_entries()))


def _entry(name: str, root: str | Path | None = None) -> ZooEntry:
    if name in REGISTRY:
        return REGISTRY[name]
    user = _user_entries(root)
    if name not in user:
        raise ValueError(f"name: unknown zoo model {name!r}; available: {names()}")
    return user[name]


def manifest_path(root: str | Path | None = None) -> Path:
    """The manifest that new weights are written to: root's, else the first $ADVLAB_ZOO folder's,
    else the bundled zoo's."""
    return zoo_dirs(root)[0] / "manifest.json"


def _locate(name: str, root: str | Path | None = None) -> tuple[dict | None, Path]:
    """(record, folder) of the first stacked zoo that holds `name`; (None, write folder) if none does."""
    for d in zoo_dirs(root):
        man = read_manifest(d)
        if name in man:
            return man[name], d
    return None, zoo_dirs(root)[0]


def read_manifest(root: str | Path | None = None) -> dict:
    """The manifest as a dict ({} when the zoo has none); ZooRecordError when it is not valid json."""
    p = manifest_path(root)
    if not p.exists():
        return {}
    try:
        man = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ZooRecordError(f"the manifest {p} is not valid json ({e}); restore it "
                             f"(git checkout -- {p.name} in the zoo folder) or re-train its models") from None
    if not isinstance(man, dict):
        raise ZooRecordError(f"the manifest {p} holds a {type(man).__name__}, not a dict of model records")
    return man


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def info(name: str, root: str | Path | None = None) -> dict:
    """The manifest record of a trained entry (raises NotTrainedError when there is none, and
    ZooRecordError, naming the model, when the manifest or the record cannot be used)."""
    return _info(name, root)[0]


def _info(name: str, root: str | Path | None = None) -> tuple[dict, Path]:
    """info() and the zoo folder the record was found in."""
    entry = _entry(name, root)
    try:
        rec, folder = _locate(name, root)
    except ZooRecordError as e:
        raise ZooRecordError(f"zoo model {name!r}: {e}") from None
    if rec is None:
        where = " or ".join(str(d) for d in zoo_dirs(root))
        raise NotTrainedError(f"zoo model {name!r} has no trained weights in {where}.\n"
                              f"  train it with:  {entry.command}")
    where = f"zoo model {name!r}: its record in {folder / 'manifest.json'}"
    if not isinstance(rec, dict):
        raise ZooRecordError(f"{where} is a {type(rec).__name__}, not a dict; re-train with: {entry.command}")
    for key in ("file", "sha256"):
        if not isinstance(rec.get(key), str) or not rec[key]:
            raise ZooRecordError(f"{where} has no {key}; refusing to load unchecked weights. "
                                 f"Re-train with: {entry.command}")
    rel = Path(rec["file"])
    if rel.is_absolute() or ".." in rel.parts or rel.drive:
        raise ZooRecordError(f"{where} names the file {rec['file']!r}, outside the zoo folder; refusing to load it "
                             "(a record names weights inside its zoo, e.g. weights/NAME.safetensors)")
    return rec, folder


def build(name: str, config: dict | None = None, root: str | Path | None = None) -> nn.Module:
    """A fresh, untrained model of the entry's architecture.

    config: a manifest record's training config; its sizes win over the registry's, so weights
    trained with other sizes (`advlab train NAME --set latent_dim=128`) load into the right shapes.
    root: the user zoo a registered entry lives in (default: the stacked zoos).
    """
    entry = _entry(name, root)
    kwargs = dict(entry.arch_kwargs)
    if config:
        if entry.builder:   # generative configs hold the sizes as fields
            kwargs |= {k: config[k] for k in kwargs if k in config}
        else:
            kwargs |= config.get("arch_kwargs", {})
    if entry.builder:
        import importlib
        import sys
        mod, fn = entry.builder.split(":")
        if name not in REGISTRY and not mod.startswith("advlab.") and mod not in sys.modules:
            raise ZooRecordError(f"zoo model {name!r}: its record names the builder {entry.builder!r}; a user zoo's "
                                 f"manifest may name advlab's builders or a module you imported yourself, so that "
                                 f"loading weights never imports code a folder chose: `import {mod}` first")
        return getattr(importlib.import_module(mod), fn)(**kwargs)
    from advlab import models
    return models.build(entry.arch, entry.dataset, **kwargs)


def load(name: str, device: str | torch.device = "cpu", root: str | Path | None = None) -> nn.Module:
    """The pretrained model `name`, in eval mode, on `device`; refuses a checksum mismatch."""
    from safetensors.torch import load_file
    rec, folder = _info(name, root)
    path = folder / rec["file"]
    if not path.exists():
        raise NotTrainedError(f"zoo model {name!r}: the manifest lists {path} but the file is missing.\n"
                              f"  train it with:  {_entry(name, root).command}")
    digest = sha256_file(path)
    if digest != rec["sha256"]:
        raise ChecksumError(f"zoo model {name!r}: {path} has sha256 {digest[:16]}..., the manifest says "
                            f"{rec['sha256'][:16]}...; refusing to load. Re-train with: {_entry(name, root).command}")
    model = build(name, rec.get("config"), root)
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as e:        # missing / unexpected keys, size mismatches
        detail = " ".join(str(e).split())
        raise ZooRecordError(f"zoo model {name!r}: {path.name} holds weights of another architecture than the "
                             f"{type(model).__name__} its record's config builds ({detail[:400]}); "
                             f"re-train with: {_entry(name, root).command}") from None
    return model.to(device).eval()


def save(name: str, model: nn.Module, config: dict, metrics: dict, command: str,
         root: str | Path | None = None, device: str = "cpu", dtype: torch.dtype | None = None,
         extra: dict | None = None) -> dict:
    """Write the entry's weights and switch its manifest record to them; returns the record.

    Crash-safe, in this order: the weights go to a new file named by their sha256
    (weights/NAME-SHA12.safetensors: temporary file, fsync, rename), then the manifest is replaced
    atomically to point at it, and only then is the previous weights file removed. A crash at any
    point leaves the old model or the new one loadable, never a record whose file is missing or
    does not match it.

    dtype: store the floating-point tensors in this dtype (torch.float16 for a compact zoo; `load`
    upcasts them); None keeps the model's. extra: more fields for the record (e.g. converted_from).
    """
    from safetensors.torch import save as to_bytes
    from advlab.zoo import atomic
    _entry(name, root)
    root = manifest_path(root).parent
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        if not dtype.is_floating_point:
            raise ValueError(f"dtype: must be a floating-point dtype such as torch.float16, got {dtype}")
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    blob = to_bytes(state)
    digest = hashlib.sha256(blob).hexdigest()
    rel = f"weights/{name.replace('/', '__')}-{digest[:12]}.safetensors"
    atomic.write_bytes(root / rel, blob)
    rec = {"file": rel, "sha256": digest, "size_bytes": len(blob),
           "config": config, "command": command, "metrics": metrics, "device": device,
           "torch": torch.__version__, "host": platform.machine(),
           "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")}
    if dtype is not None:
        rec["dtype"] = str(dtype).removeprefix("torch.")
    rec |= extra or {}
    atomic.pause_point("zoo.save:weights-written")    # kill tests: the new weights exist, the manifest is old
    with _locked(root / ".manifest.lock"):  # several trainings may finish at once
        man = read_manifest(root)
        old = man.get(name, {}).get("file") if isinstance(man.get(name), dict) else None
        man[name] = rec
        atomic.write_json(manifest_path(root), dict(sorted(man.items())))
        still_used = {r.get("file") for r in man.values() if isinstance(r, dict)}
        if old and old not in still_used and not Path(old).is_absolute() and ".." not in Path(old).parts:
            (root / old).unlink(missing_ok=True)
    return rec


def convert(name: str, dtype: torch.dtype = torch.float16, check: dict | None = None,
            root: str | Path | None = None) -> dict:
    """Re-store a trained entry's weights in `dtype` (float16 halves the file) and return the new record.

    The record keeps the original's config, command, metrics and device, names the file it came from
    under "converted_from" ({file, sha256, size_bytes, dtype, torch, date}) and stores `check`
    (the metrics re-measured with the converted weights against the originals; see
    scripts/compact_zoo.py) under "conversion_check". Converting an already converted entry keeps the
    first original. Crash-safe like `save`.
    """
    old = info(name, root)
    if old.get("dtype") == str(dtype).removeprefix("torch."):
        return old
    model = load(name, "cpu", root)
    origin = old.get("converted_from") or {"file": old["file"], "sha256": old["sha256"],
                                           "size_bytes": old.get("size_bytes"), "dtype": old.get("dtype", "float32"),
                                           "torch": old.get("torch"), "date": old.get("date")}
    return save(name, model, old.get("config"), old.get("metrics"), old.get("command"), root=root,
                device=old.get("device", "cpu"), dtype=dtype,
                extra={"converted_from": origin, "conversion_check": check or {}})


def same_weights(name: str, sha256: str, root: str | Path | None = None) -> bool:
    """True when `sha256` names the entry's current weights, or the file they were converted from
    (a float16 copy of float32 weights whose re-measured metrics moved by at most the recorded check).
    A missing sha256 (None, "") names no weights."""
    if not sha256:
        return False
    try:
        rec = info(name, root)
    except NotTrainedError:
        return False
    return sha256 == rec["sha256"] or sha256 == (rec.get("converted_from") or {}).get("sha256")


class _locked:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.f = open(self.path, "w")
        try:
            import fcntl
            fcntl.flock(self.f, fcntl.LOCK_EX)
        except ImportError:  # Windows: no advisory locks; saves are rare enough
            pass
        return self

    def __exit__(self, *exc):
        self.f.close()


_FRONT = {"list": "list_models", "list_models": "list_models", "load_model": "load_model", "register": "register"}


def __getattr__(name: str):
    """zoo.list, zoo.list_models, zoo.load_model, zoo.register: the front end (advlab.zoo.front) reads
    evaluation records and builds defenses, so it sits above advlab.evaluation and advlab.purifiers,
    which load models from here; it is imported on first use (PEP 562) so that the layers stay a DAG."""
    if name in _FRONT:
        import importlib
        return getattr(importlib.import_module("advlab.zoo.front"), _FRONT[name])
    raise AttributeError(f"module 'advlab.zoo' has no attribute {name!r}")
