"""The pretrained model zoo: a plain registry of named models.

    clf = zoo.load("fmnist/cnn")          # eval-mode nn.Module, [0,1] images -> logits

Weights live in advlab/zoo/weights/*.safetensors; advlab/zoo/manifest.json records for each
entry its sha256, config, the exact `advlab train` command, metrics, device, date and size.
`load` refuses a file whose sha256 differs from the manifest's (weights are never unpickled).
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


from advlab.zoo.entries import REGISTRY, ZooEntry, register  # noqa: E402,F401 (the registry)


def names() -> list[str]:
    return sorted(REGISTRY)


def _entry(name: str) -> ZooEntry:
    if name not in REGISTRY:
        raise ValueError(f"name: unknown zoo model {name!r}; available: {names()}")
    return REGISTRY[name]


def manifest_path(root: str | Path | None = None) -> Path:
    return Path(root or os.environ.get("ADVLAB_ZOO") or ZOO_DIR) / "manifest.json"


def read_manifest(root: str | Path | None = None) -> dict:
    p = manifest_path(root)
    return json.loads(p.read_text()) if p.exists() else {}


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def info(name: str, root: str | Path | None = None) -> dict:
    """The manifest record of a trained entry (raises NotTrainedError when there is none)."""
    entry = _entry(name)
    rec = read_manifest(root).get(name)
    if rec is None:
        raise NotTrainedError(f"zoo model {name!r} has no trained weights in {manifest_path(root).parent}.\n"
                              f"  train it with:  {entry.command}")
    return rec


def build(name: str, config: dict | None = None) -> nn.Module:
    """A fresh, untrained model of the entry's architecture.

    config: a manifest record's training config; its sizes win over the registry's, so weights
    trained with other sizes (`advlab train NAME --set latent_dim=128`) load into the right shapes.
    """
    entry = _entry(name)
    kwargs = dict(entry.arch_kwargs)
    if config:
        if entry.builder:   # generative configs hold the sizes as fields
            kwargs |= {k: config[k] for k in kwargs if k in config}
        else:
            kwargs |= config.get("arch_kwargs", {})
    if entry.builder:
        import importlib
        mod, fn = entry.builder.split(":")
        return getattr(importlib.import_module(mod), fn)(**kwargs)
    from advlab import models
    return models.build(entry.arch, entry.dataset, **kwargs)


def load(name: str, device: str | torch.device = "cpu", root: str | Path | None = None) -> nn.Module:
    """The pretrained model `name`, in eval mode, on `device`; refuses a checksum mismatch."""
    from safetensors.torch import load_file
    rec = info(name, root)
    path = manifest_path(root).parent / rec["file"]
    if not path.exists():
        raise NotTrainedError(f"zoo model {name!r}: the manifest lists {path} but the file is missing.\n"
                              f"  train it with:  {_entry(name).command}")
    digest = sha256_file(path)
    if digest != rec["sha256"]:
        raise ChecksumError(f"zoo model {name!r}: {path} has sha256 {digest[:16]}..., the manifest says "
                            f"{rec['sha256'][:16]}...; refusing to load. Re-train with: {_entry(name).command}")
    model = build(name, rec.get("config"))
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.to(device).eval()


def save(name: str, model: nn.Module, config: dict, metrics: dict, command: str,
         root: str | Path | None = None, device: str = "cpu") -> dict:
    """Write the entry's safetensors file and its manifest record; returns the record."""
    from safetensors.torch import save_file
    _entry(name)
    root = manifest_path(root).parent
    rel = f"weights/{name.replace('/', '__')}.safetensors"
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    rec = {"file": rel, "sha256": sha256_file(path), "size_bytes": path.stat().st_size,
           "config": config, "command": command, "metrics": metrics, "device": device,
           "torch": torch.__version__, "host": platform.machine(),
           "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")}
    with _locked(root / ".manifest.lock"):  # several trainings may finish at once
        man = read_manifest(root)
        man[name] = rec
        tmp = manifest_path(root).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(dict(sorted(man.items())), indent=2) + "\n")
        tmp.replace(manifest_path(root))
    return rec


def record_evaluation(name: str, key: str, result: dict, root: str | Path | None = None) -> dict:
    """Add an evaluation (attack repr, n, accuracies) under record["evaluations"][key]; the weights
    and their sha256 are untouched. Returns the updated record."""
    root = manifest_path(root).parent
    with _locked(root / ".manifest.lock"):
        man = read_manifest(root)
        if name not in man:
            raise NotTrainedError(f"zoo model {name!r} has no record in {root}")
        man[name].setdefault("evaluations", {})[key] = result
        tmp = manifest_path(root).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(dict(sorted(man.items())), indent=2) + "\n")
        tmp.replace(manifest_path(root))
    return man[name]


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
