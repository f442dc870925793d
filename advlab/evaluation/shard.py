"""Chunks of a long evaluation: a crash-safe store of per-chunk results, and sharding of the chunks
across the processes that `torchrun --nproc_per_node N` starts.

    store = ChunkStore("build/adaptive", key, label="lqvae")   # one folder per key
    rank, world = init(device)                                 # (0, 1) outside torchrun
    mine = my_chunks(starts, rank, world)                      # chunk starts this rank runs
    merged = gather({start: store.load(start) for start in mine})   # rank 0: every rank's chunks

A chunk's result depends only on its images and the seed (see evaluation.adaptive), so the chunks
of a run can be computed in any order, by any rank, and resumed from the store after a crash: the
merged result of N processes equals the single-process one.

On disk: FOLDER/LABEL_DIGEST/key.json (the key, for people) and one START.json per finished chunk,
each written atomically (advlab.zoo.atomic: temporary file, fsync, os.replace), so a crash leaves
whole files only; an unreadable or foreign chunk file is computed again.
"""
from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

import torch

DEFAULT_FOLDER = "build/adaptive"


def digest(obj) -> str:
    """sha256 (12 hex digits) of obj as canonical json."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


class ChunkStore:
    """Per-chunk results of one evaluation key under FOLDER/LABEL_DIGEST/ (see the module docstring)."""

    def __init__(self, folder: str | Path | None, key: dict, label: str = "eval"):
        label = re.sub(r"[^A-Za-z0-9.+_-]+", "_", label).strip("_")[:60] or "eval"
        self.key = key
        self.path = Path(folder or DEFAULT_FOLDER) / f"{label}_{digest(key)}"

    def _file(self, name) -> Path:
        return self.path / f"{name}.json"

    def load(self, name) -> dict | None:
        """The saved result `name` (a chunk start or a label such as "sanity"), or None."""
        f = self._file(name)
        if not f.exists():
            return None
        try:
            rec = json.loads(f.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            warnings.warn(f"{f}: unreadable ({e}); computing it again", RuntimeWarning, stacklevel=2)
            return None
        if not isinstance(rec, dict) or rec.get("key_digest") != digest(self.key):
            return None
        return rec["data"]

    def save(self, name, data: dict) -> None:
        from advlab.zoo import atomic
        if not self._file("key").exists():
            atomic.write_json(self._file("key"), self.key)
        atomic.write_json(self._file(name), {"key_digest": digest(self.key), "data": data}, indent=None)


# ----------------------------------------------------------------------------- processes


def init(device) -> tuple[int, int]:
    """(rank, world size): joins torchrun's process group (gloo on CPU, nccl on CUDA), or (0, 1)."""
    from advlab.training.loop import init_distributed
    return init_distributed(torch.device(device))


def world() -> tuple[int, int]:
    """(rank, world size) of the process group already joined, else (0, 1)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def my_chunks(starts: list[int], rank: int, world_size: int) -> list[int]:
    """The chunk starts rank `rank` runs: a contiguous slice, so each rank's images are one block."""
    per = -(-len(starts) // world_size)
    return starts[rank * per:(rank + 1) * per]


def gather(obj: dict) -> dict | None:
    """Rank 0: the union of every rank's dict; other ranks: None. Outside torchrun: obj itself."""
    import torch.distributed as dist
    rank, size = world()
    if size == 1:
        return obj
    parts = [None] * size if rank == 0 else None
    dist.gather_object(obj, parts, dst=0)
    if rank != 0:
        return None
    merged = {}
    for p in parts:
        merged.update(p)
    return merged


def broadcast(obj):
    """Rank 0's obj on every rank (obj itself outside torchrun)."""
    import torch.distributed as dist
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
