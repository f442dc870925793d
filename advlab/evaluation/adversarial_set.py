"""Adversarial sets: (model weights, attack, test subset) -> adversarial images, crafted once.

    x_adv = craft(model, x, y, attack, model_sha256=zoo.info(name)["sha256"],
                  subset={"dataset": "fashion_mnist", "split": "test", "n": 2000, "seed": 0}, chunk=250)

Crafting adversarial examples is the expensive part of every evaluation (AutoAttack on 1000 images:
minutes on a GPU, an hour on a CPU; paper 004's tables attack three classifiers five ways). `craft`
attacks x in chunks, saves each chunk as soon as it is done and returns the whole set; an
interrupted run resumes at the first missing chunk, and a finished one is read back from disk.

The cache key is everything the images depend on: the model's sha256, the attack's repr (every
setting, its seed included), the subset (its description, and a fingerprint of x and y) and the
chunk size (an attack draws its random start per call, so other chunks give other images). A
changed model or attack misses the cache; it never returns stale images. A resumed run equals an
uninterrupted one when the attack is deterministic given its seed (every advlab attack with seed=).

On disk, under `folder` (default build/cache/advsets, or $ADVLAB_ADVSETS):
    STEM.json                   the index: the key and the finished chunks {start: {"n": ...}}
    STEM/START.safetensors      one chunk's adversarial images, its key in the metadata
Each write is atomic (advlab.zoo.atomic), the chunk before the index, so a crash at any point
leaves files that load; a corrupt index or chunk is reported with a warning and crafted again.

`advlab evaluate` (its chunks are its resume state, in build/eval), `advlab defense-report`'s grey-box
attack and scripts/paper_tables.py --cache all craft through here.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path

import torch

DEFAULT_FOLDER = "build/cache/advsets"


def cache_folder(folder: str | Path | None = None) -> Path:
    """The adversarial-set cache: `folder`, else $ADVLAB_ADVSETS, else the default under build/."""
    return Path(folder or os.environ.get("ADVLAB_ADVSETS") or DEFAULT_FOLDER)


def fingerprint(*tensors: torch.Tensor) -> str:
    """sha256 (16 hex digits) of the tensors' values, shapes and dtypes."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)} {t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def cache_key(model_sha256: str, attack, x, y, subset: dict | None, chunk: int) -> dict:
    """What identifies a cached adversarial set: model weights, attack repr, subset, data fingerprint, n and chunk."""
    return {"model_sha256": model_sha256, "attack": repr(attack), "subset": subset or {},
            "data": fingerprint(x, y), "n": len(x), "chunk": chunk}


def stem(key: dict, name: str = "") -> str:
    """The file name of a set: readable parts, then a hash of the whole key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    label = re.sub(r"[^A-Za-z0-9.+_-]+", "_", f"{name.replace('/', '__')}_{key['attack'].split('(')[0]}").strip("_")
    return f"{label}_n{key['n']}_{digest}"


def craft(model, x: torch.Tensor, y: torch.Tensor, attack, *, model_sha256: str, subset: dict | None = None,
          chunk: int | None = None, folder: str | Path | None = None, name: str = "",
          progress: bool = True) -> torch.Tensor:
    """attack(model, x, y), crafted in chunks of `chunk` images (None: one chunk), each saved as it
    finishes and read back on a later call with the same key. model_sha256: the sha256 of the
    model's weights (zoo.info(name)["sha256"]); subset: how x was drawn, for the key and for people
    (e.g. {"dataset": ..., "split": "test", "n": 2000, "seed": 0}); name: a label for file names."""
    from tqdm.auto import tqdm
    from advlab.zoo import atomic
    if not isinstance(model_sha256, str) or not model_sha256:
        raise ValueError(f"model_sha256: expected the sha256 of the model's weights, got {model_sha256!r}")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk: must be a positive int or None, got {chunk!r}")
    chunk = chunk or max(len(x), 1)
    key = cache_key(model_sha256, attack, x, y, subset, chunk)
    folder = cache_folder(folder)
    index_path = folder / f"{stem(key, name)}.json"
    index = _read_index(index_path, key)
    parts = []
    for start in tqdm(range(0, len(x), chunk), desc=f"{name or 'model'} {key['attack'].split('(')[0]}",
                      disable=not progress, leave=False):
        xc, yc = x[start:start + chunk], y[start:start + chunk]
        path = index_path.with_suffix("") / f"{start}.safetensors"
        x_adv = _read_chunk(path, key, start, len(xc)) if str(start) in index["chunks"] else None
        if x_adv is None:
            x_adv = attack(model, xc, yc).detach()
            atomic.save_safetensors({"x_adv": x_adv.cpu().contiguous()}, path, _metadata(key, start))
            atomic.pause_point("advset:chunk-saved")        # kill tests: the chunk is saved, the index not yet
            index["chunks"][str(start)] = {"n": len(xc)}
            atomic.write_json(index_path, index, indent=1)
        parts.append(x_adv.to(x.device))
    return torch.cat(parts) if parts else x.clone()


def _metadata(key: dict, start: int) -> dict:
    return {"key": json.dumps(key, sort_keys=True), "start": str(start)}


def _read_index(path: Path, key: dict) -> dict:
    """The index at path when it belongs to key; else (missing, corrupt, other key) a fresh one."""
    fresh = {"key": key, "chunks": {}}
    if not path.exists():
        return fresh
    try:
        index = json.loads(path.read_text())
        if not isinstance(index, dict) or not isinstance(index.get("chunks"), dict):
            raise ValueError("not an index (a dict with 'chunks')")
    except (ValueError, UnicodeDecodeError) as e:
        warnings.warn(f"adversarial set: the resume file {path} is corrupt ({e}); starting it again", RuntimeWarning,
                      stacklevel=3)
        return fresh
    return index if index.get("key") == key else fresh


def _read_chunk(path: Path, key: dict, start: int, n: int) -> torch.Tensor | None:
    """The chunk saved at path when it is whole and of this key; else None (with a warning if corrupt)."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    try:
        with safe_open(str(path), "pt") as f:
            ok = f.metadata() == _metadata(key, start)
        x_adv = load_file(str(path))["x_adv"] if ok else None
    except Exception as e:   # missing, truncated or not safetensors: craft it again
        warnings.warn(f"adversarial set: chunk {path} is unreadable ({type(e).__name__}: {e}); crafting it again",
                      RuntimeWarning, stacklevel=3)
        return None
    return x_adv if x_adv is not None and len(x_adv) == n else None
