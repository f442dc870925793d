"""Carry an unfinished training run across machines in git: a compact copy of a training checkpoint.

A CPU training run that needs more hours than one session keeps its state in build/checkpoints/, which a
fresh machine does not have (and the whole state, weights + EMA + optimiser moments, is too large to commit
every session). `pack` writes a compact copy into a tracked folder, runs/training/NAME/:
  tensors.safetensors  every tensor of the state; the weights and their EMA in float16, the optimiser's
                       moments in bfloat16 (float16 would flush Adam's small second moments to zero),
                       integer tensors (generator states, counters) and one-element tensors unchanged;
  state.json           everything else (optimiser groups, scheduler, the run's meta: iteration, history),
                       with each tensor's place and original dtype.
`unpack` writes the checkpoint back (original dtypes), and the run's own command resumes from it. The
resumed run is the same run (iteration, history, generator states, so the same batches and noise) up to
the rounding of the floats, once per carry. Nothing is unpickled: safetensors and json only.

    python -m advlab.training.carry pack build/checkpoints/fmnist__consistency_KEY.pt runs/training
    python -m advlab.training.carry unpack runs/training/fmnist__consistency_KEY build/checkpoints
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

HALF = ("model", "ema")     # top-level states whose float tensors are stored in float16
FP16_MAX = 65504.0


def _store_dtype(path: str, t: torch.Tensor) -> torch.dtype:
    if not t.is_floating_point() or t.numel() <= 1:
        return t.dtype
    if path.split("/")[0] in HALF:
        return torch.float16 if t.abs().max().item() <= FP16_MAX else torch.bfloat16
    return torch.bfloat16


def _join(path: str, key) -> str:
    return f"{path}/{key}" if path else str(key)


def _flatten(obj, path: str, tensors: dict):
    """obj with every tensor replaced by {"tensor": key, "dtype": original}; tuples and dicts whose keys are
    not all strings are tagged so that unpack rebuilds them exactly."""
    if torch.is_tensor(obj):
        t = obj.detach().cpu()
        tensors[path] = t.to(_store_dtype(path, t)).contiguous().clone()
        return {"tensor": path, "dtype": str(t.dtype).removeprefix("torch.")}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"dict": {k: _flatten(v, _join(path, k), tensors) for k, v in obj.items()}}
        return {"items": [[k, _flatten(v, _join(path, k), tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"list" if isinstance(obj, list) else "tuple": [_flatten(v, _join(path, i), tensors)
                                                               for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    raise TypeError(f"{path}: cannot carry a {type(obj).__name__}")


def _rebuild(node, tensors: dict):
    if "tensor" in node:
        return tensors[node["tensor"]].to(getattr(torch, node["dtype"]))
    (kind, v), = node.items()
    if kind == "dict":
        return {k: _rebuild(x, tensors) for k, x in v.items()}
    if kind == "items":
        return {k: _rebuild(x, tensors) for k, x in v}
    if kind in ("list", "tuple"):
        out = [_rebuild(x, tensors) for x in v]
        return out if kind == "list" else tuple(out)
    return v


def pack(checkpoint: str | Path, runs_dir: str | Path) -> Path:
    """Write the compact copy of `checkpoint` (a save_training_state file) into runs_dir/STEM/; returns the folder."""
    from safetensors.torch import save_file
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint: {checkpoint} does not exist")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "meta" not in state:
        raise ValueError(f"checkpoint: {checkpoint} is not a training state written by save_training_state")
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors)
    out = Path(runs_dir) / checkpoint.stem
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "tensors.safetensors")
    meta = json.loads(state["meta"])
    (out / "state.json").write_text(json.dumps({"source": checkpoint.name, "iter": meta.get("iter"),
                                                "epoch": meta.get("epoch"), "state": skeleton}) + "\n")
    return out


def unpack(folder: str | Path, checkpoint_dir: str | Path, force: bool = False) -> Path:
    """Write the checkpoint that `folder` (a pack) carries into checkpoint_dir under its own name; returns
    its path. Refuses to overwrite an existing checkpoint unless force (it may be further along)."""
    from safetensors.torch import load_file
    from advlab.training.loop import save_training_state
    folder = Path(folder)
    if not (folder / "state.json").is_file() or not (folder / "tensors.safetensors").is_file():
        raise FileNotFoundError(f"folder: {folder} holds no packed training state (state.json, tensors.safetensors)")
    info = json.loads((folder / "state.json").read_text())
    dst = Path(checkpoint_dir) / info["source"]
    if dst.exists() and not force:
        raise FileExistsError(f"checkpoint_dir: {dst} exists (it may be further along than the pack, "
                              f"iteration {info['iter']}); pass force=True / --force to replace it")
    state = _rebuild(info["state"], load_file(folder / "tensors.safetensors"))
    g = torch.Generator()
    g.set_state(state.pop("g"))
    rng = torch.get_rng_state()
    torch.set_rng_state(state.pop("torch_rng"))
    meta = json.loads(state.pop("meta"))
    try:   # save_training_state writes torch's global RNG state: set it to the carried one for the write
        save_training_state(dst, g, meta, **{name: _Dict(sd) for name, sd in state.items()})
    finally:
        torch.set_rng_state(rng)
    return dst


class _Dict:
    """A saved state_dict that save_training_state can call .state_dict() on."""

    def __init__(self, sd: dict):
        self.sd = sd

    def state_dict(self) -> dict:
        return self.sd


def main(argv=None) -> int:
    """The command line of the module docstring; exit status 2 with a one-line message naming the argument."""
    p = argparse.ArgumentParser(prog="python -m advlab.training.carry", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    a = sub.add_parser("pack", help="checkpoint -> runs/training/NAME (compact, tracked)")
    a.add_argument("checkpoint")
    a.add_argument("runs_dir", nargs="?", default="runs/training")
    b = sub.add_parser("unpack", help="runs/training/NAME -> build/checkpoints/NAME.pt")
    b.add_argument("folder")
    b.add_argument("checkpoint_dir", nargs="?", default="build/checkpoints")
    b.add_argument("--force", action="store_true", help="replace an existing checkpoint")
    args = p.parse_args(argv)
    try:
        if args.action == "pack":
            out = pack(args.checkpoint, args.runs_dir)
            size = sum(f.stat().st_size for f in out.iterdir())
            print(f"packed {args.checkpoint} into {out} ({size / 2 ** 20:.1f} MiB)")
        else:
            print(f"unpacked {args.folder} into {unpack(args.folder, args.checkpoint_dir, args.force)}")
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"carry {args.action}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
