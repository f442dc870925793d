"""One readable training loop for every model in the course.

    cfg = TrainConfig(arch="cnn", dataset="fashion_mnist", epochs=12)
    model, metrics = train(cfg)

`loss_fn(model, x, y) -> loss` replaces plain cross-entropy, which is how adversarial training
(lecture 03) reuses this loop. Checkpoints (model, optimiser, scheduler and RNG states, and a json of
the epoch and history) are written after every epoch when `checkpoint` is set, and training resumes
from them. Every write is crash-safe: a temporary file, fsync, then an atomic rename, so a run killed
at any moment leaves the previous checkpoint or the new one; a checkpoint that cannot be read (damaged
by other means) is reported with a warning and that run starts afresh.
"""
from __future__ import annotations

import copy
import json
import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from advlab import data, models
from advlab.metrics import accuracy
from advlab.zoo.atomic import fsync_dir


@dataclass
class TrainConfig:
    arch: str = "cnn"
    dataset: str = "fashion_mnist"
    epochs: int = 12
    batch_size: int = 128
    lr: float = 0.05              # peak learning rate of the one-cycle schedule (SGD, Nesterov)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    augment: bool = True          # random 2-pixel shifts + horizontal flips
    n_train: int | None = None    # None: the whole training split
    n_test: int | None = None     # None: the whole test split
    seed: int = 0
    device: str = "auto"
    amp: bool = True              # bf16 autocast on CUDA; ignored on CPU
    arch_kwargs: dict = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """"auto" (or None): CUDA when available, else the CPU; otherwise the device named, ValueError naming
    `device` when it is not one or is not on this machine."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from advlab.validate import check_device
    return check_device(device)


def check_config(cfg: TrainConfig) -> None:
    """ValueError naming the field of a TrainConfig (or a subclass) that cannot be trained with."""
    from advlab.validate import check_positive

    def integer(name, minimum, allow_none=False):
        v = getattr(cfg, name)
        if v is None and allow_none:
            return
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(f"{name}: must be an int >= {minimum}{' or None' if allow_none else ''}, got {v!r}")
    if not isinstance(cfg.dataset, str) or cfg.dataset not in data.DATASETS:
        raise ValueError(f"dataset: unknown dataset {cfg.dataset!r}; choose one of {sorted(data.DATASETS)}")
    integer("epochs", 1)
    integer("batch_size", 1)
    integer("seed", -(2 ** 63))
    info = data.info(cfg.dataset)
    for name, size in (("n_train", info.n_train), ("n_test", info.n_test)):
        integer(name, 1, allow_none=True)
        if getattr(cfg, name) is not None and getattr(cfg, name) > size:
            raise ValueError(f"{name}: {cfg.dataset} has {size} images in that split, asked for {getattr(cfg, name)}")
    check_positive(cfg.lr, "lr")
    check_positive(cfg.weight_decay, "weight_decay", strict=False)
    for name in ("momentum", "label_smoothing"):
        v = getattr(cfg, name)
        check_positive(v, name, strict=False)
        if v >= 1:
            raise ValueError(f"{name}: must lie in [0, 1), got {v!r}")
    if not isinstance(cfg.arch_kwargs, dict):
        raise ValueError(f"arch_kwargs: must be a dict, got {cfg.arch_kwargs!r}")
    resolve_device(cfg.device)


def augment_batch(x: torch.Tensor, generator: torch.Generator | None = None, shift: int = 2, flip: bool = True) -> torch.Tensor:
    """Per-image random translation by up to `shift` pixels (zero padding) and horizontal flip."""
    n, c, h, w = x.shape
    g = dict(generator=generator, device="cpu")
    xp = F.pad(x, (shift,) * 4)
    di = torch.randint(0, 2 * shift + 1, (n,), **g).to(x.device)
    dj = torch.randint(0, 2 * shift + 1, (n,), **g).to(x.device)
    rows = (di[:, None] + torch.arange(h, device=x.device))[:, None, :, None]   # (n,1,h,1)
    cols = (dj[:, None] + torch.arange(w, device=x.device))[:, None, None, :]   # (n,1,1,w)
    out = xp[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    if flip:
        mask = (torch.rand(n, **g) < 0.5).to(x.device)[:, None, None, None]
        out = torch.where(mask, out.flip(3), out)
    return out


def train(cfg: TrainConfig, model: nn.Module | None = None,
          loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
          checkpoint: str | Path | None = None, progress: bool = True,
          monitor: Callable[[nn.Module, int], dict | None] | None = None, monitor_every: int = 0,
          ) -> tuple[nn.Module, dict]:
    """Train `model` (or a fresh `cfg.arch`) and return it in eval mode with its metrics.

    monitor(model, step) is called every `monitor_every` optimiser steps (0: after each epoch) and
    may return a dict, kept in metrics["monitor"] with the step and epoch it was called at; {"stop": True}
    in it ends training there. A resumed run keeps the earlier calls' rows (the checkpoint saves them) and
    hands them to monitor.restore(rows) when the monitor has one.
    Under torchrun (several processes) the model is wrapped in DistributedDataParallel and each
    process trains on its shard of every epoch; cfg.batch_size stays the global batch size.
    """
    check_config(cfg)
    if isinstance(monitor_every, bool) or not isinstance(monitor_every, int) or monitor_every < 0:
        raise ValueError(f"monitor_every: must be an int >= 0, got {monitor_every!r}")
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    rank, world = init_distributed(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    if cfg.batch_size % world:
        raise ValueError(f"batch_size: {cfg.batch_size} is not divisible by the {world} processes")
    progress = progress and rank == 0
    model = (model or models.build(cfg.arch, cfg.dataset, **cfg.arch_kwargs)).to(device)
    x_train, y_train = data.batch(cfg.dataset, "train", n=cfg.n_train, seed=cfg.seed)
    x_test, y_test = data.batch(cfg.dataset, "test", n=cfg.n_test, seed=cfg.seed)
    sampler = None
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        from torch.utils.data.distributed import DistributedSampler
        sampler = DistributedSampler(range(len(y_train)), num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        net = model
    batch_size = cfg.batch_size // world
    n_local = len(sampler) if sampler is not None else len(y_train)
    steps_per_epoch = math.ceil(n_local / batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                          weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * steps_per_epoch
    if total_steps * 0.25 > 1:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=0.25)
    else:   # fewer than 5 steps: no room for a warm-up (OneCycleLR divides by zero), a constant cfg.lr
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    loss_fn = loss_fn or (lambda m, xb, yb: F.cross_entropy(m(xb), yb, label_smoothing=cfg.label_smoothing))
    use_amp = cfg.amp and device.type == "cuda"
    g = torch.Generator().manual_seed(cfg.seed)  # shuffling and augmentation
    ckpt = Path(checkpoint) if checkpoint else None
    meta = resume_training_state(ckpt, g, model=model, opt=opt, sched=sched) if ckpt else None
    start_epoch, history, before, calls = resumed_progress(meta, "epoch")
    t0, monitored, stop = time.time() - before, list((meta or {}).get("monitor", [])), False
    if monitored and hasattr(monitor, "restore"):   # the monitor goes on from the checks of the earlier calls
        monitor.restore(monitored)
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
            perm = torch.tensor(list(sampler))
            torch.randperm(len(y_train), generator=g)  # keep g's stream identical to one process
        else:
            perm = torch.randperm(len(y_train), generator=g)
        bar = tqdm(range(steps_per_epoch), desc=f"{cfg.arch} epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False)
        total_loss, seen = 0.0, 0
        for step in bar:
            idx = perm[step * batch_size:(step + 1) * batch_size]
            xb, yb = x_train[idx].to(device), y_train[idx].to(device)
            if cfg.augment:
                xb = augment_batch(xb, g)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = loss_fn(net, xb, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(yb)
            seen += len(yb)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{total_loss / seen:.3f}")
            global_step = epoch * steps_per_epoch + step + 1
            if monitor and monitor_every and global_step % monitor_every == 0:
                _sync_buffers(model, world)
                stop = _call_monitor(monitor, model, global_step, global_step / steps_per_epoch, monitored, progress)
                if stop:
                    break
        _sync_buffers(model, world)
        if monitor and not monitor_every:
            stop = _call_monitor(monitor, model, (epoch + 1) * steps_per_epoch, epoch + 1, monitored, progress)
        test_acc = accuracy(model, x_test.to(device), y_test.to(device))
        history.append({"epoch": epoch + 1, "train_loss": total_loss / seen, "test_acc": test_acc,
                        "seconds": round(time.time() - t0, 1), "call": calls})
        if progress:
            print(f"epoch {epoch + 1}/{cfg.epochs}: train loss {total_loss / seen:.4f}, "
                  f"test acc {100 * test_acc:.2f}% ({len(y_test)} images)")
        if ckpt and rank == 0 and not stop:
            save_training_state(ckpt, g, {"epoch": epoch + 1, "history": history, "seconds": round(time.time() - t0, 1),
                                          "calls": calls, "monitor": monitored}, model=model, opt=opt, sched=sched)
        if stop:
            break
    model.eval()
    metrics = {"clean_acc": history[-1]["test_acc"] if history else None, "n_test": len(y_test),
               "epochs": cfg.epochs, "train_seconds": round(time.time() - t0, 1), "history": history}
    if monitor:
        metrics["monitor"] = monitored
    if world > 1:
        metrics["world_size"] = world
    return model, metrics


def _sync_buffers(model: nn.Module, world: int) -> None:
    # BN running statistics are updated by each process on its own shard: rank 0's become everyone's,
    # so that evaluation, monitoring and the saved weights agree across processes
    if world > 1:
        for buf in model.buffers():
            torch.distributed.broadcast(buf, src=0)


def _call_monitor(monitor, model, step: int, epoch: float, monitored: list, progress: bool) -> bool:
    was_training = model.training
    out = monitor(model, step) or {}
    model.train(was_training)
    if out:
        monitored.append({"step": step, "epoch": round(epoch, 4)} | out)
        if progress and out.get("message"):
            tqdm.write(out["message"])
    return bool(out.get("stop"))


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size): joins the process group that torchrun describes in the environment
    (nccl on CUDA, gloo on CPU), or (0, 1) outside torchrun."""
    import os
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return 0, 1
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _crash_hook(what: str) -> None:
    """Test hook of tests/test_training_crash.py: with ADVLAB_CRASH_AT="<what>:<k>" (what: state or
    meta), the k-th write of that kind in this process touches the file ADVLAB_CRASH_MARKER once its
    temporary file is complete, then sleeps (ADVLAB_CRASH_SLEEP seconds, default 600) before the
    rename, so that the test can kill the process exactly there. Does nothing when unset."""
    spec = os.environ.get("ADVLAB_CRASH_AT")
    if not spec or not spec.startswith(what + ":"):
        return
    _crash_hook.counts[what] = _crash_hook.counts.get(what, 0) + 1
    if _crash_hook.counts[what] == int(spec.split(":")[1]):
        Path(os.environ["ADVLAB_CRASH_MARKER"]).write_text(what)
        time.sleep(float(os.environ.get("ADVLAB_CRASH_SLEEP", "600")))


_crash_hook.counts = {}


def atomic_write(path: str | Path, write: Callable, what: str = "file") -> None:
    """write(tmp_path) into a temporary file next to `path`, fsync it, rename it over `path` and fsync
    the folder: readers (and a later run after a crash) see the old file or the new one, never half."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _crash_hook(what)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


def save_training_state(path: str | Path, g: torch.Generator, meta: dict, **states) -> None:
    """Write a resumable training state: states[name].state_dict() for each named model, optimiser or
    scheduler, the run's generator `g`, torch's global RNG state and `meta` (json: epoch or iteration,
    history) into `path`, and `meta` again into PATH.json for readers. The RNG states make a resumed
    run identical to an uninterrupted one. Both files are replaced atomically (temporary file, fsync,
    rename), the state first: the meta inside it is the one a resume trusts, so a crash between the
    two renames loses nothing. The file is our own and read back with weights_only=True."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: obj.state_dict() for name, obj in states.items()} \
        | {"g": g.get_state(), "torch_rng": torch.get_rng_state(), "meta": json.dumps(meta)}
    atomic_write(path, lambda tmp: torch.save(state, tmp), "state")
    atomic_write(path.with_suffix(".pt.json"), lambda tmp: Path(tmp).write_text(json.dumps(meta)), "meta")


def load_training_state(path: str | Path, g: torch.Generator, **states) -> dict:
    """Restore what save_training_state wrote into the given objects (same names); returns its meta.
    Everything is read and checked before any object is changed."""
    path = Path(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not {"g", "torch_rng", *states} <= set(state):
        raise ValueError(f"{path}: not a training state with {sorted(states)} (keys "
                         f"{sorted(state) if isinstance(state, dict) else type(state).__name__})")
    meta = json.loads(state["meta"]) if "meta" in state else json.loads(path.with_suffix(".pt.json").read_text())
    for name, obj in states.items():
        obj.load_state_dict(state[name])
    g.set_state(state["g"])
    torch.set_rng_state(state["torch_rng"])
    where = ", ".join(f"{k} {meta[k]}" for k in ("epoch", "iter") if k in meta)
    print(f"resuming from {path} after {where}")
    return meta


def cumulative_seconds(history: list[dict]) -> list[dict]:
    """History rows with training seconds over all calls and the call that logged each ("call": 1, 2, ...).

    Rows that already name their call are kept. Rows written before calls were counted restarted their
    seconds at every resumed call: a row whose seconds are below the previous row's starts a new call,
    and the earlier calls' seconds are added to it (a call whose first row took longer than all the
    calls before it cannot be told apart, and stays merged with them)."""
    out, offset, last, call = [], 0.0, 0.0, 1
    for h in history:
        if "call" in h:
            out.append(h)
            offset, last, call = 0.0, 0.0, h["call"]
            continue
        if h["seconds"] < last:
            offset, call = offset + last, call + 1
        last = h["seconds"]
        out.append(h | {"seconds": round(h["seconds"] + offset, 1), "call": call})
    return out


def resumed_progress(meta: dict | None, key: str) -> tuple[int, list[dict], float, int]:
    """Where a run goes on from the state resume_training_state returned (None: a fresh run).

    key: "epoch" or "iter", the unit the run counts. Returns (the first epoch or iteration still to
    train, the history with seconds over all calls (cumulative_seconds), the training seconds of the
    earlier calls, the number of this call). Checkpoints written before seconds and calls were saved
    fall back on the repaired history's last row."""
    if meta is None:
        return 0, [], 0.0, 1
    history = cumulative_seconds(meta["history"])
    before = float(meta.get("seconds", history[-1]["seconds"] if history else 0.0))
    calls = int(meta.get("calls", history[-1]["call"] if history else 1)) + 1
    return meta[key], history, before, calls


def resume_training_state(path: str | Path | None, g: torch.Generator, **states) -> dict | None:
    """load_training_state when `path` (or its PATH.json) exists; None when there is nothing to resume.
    A state that cannot be read (truncated, not ours, written for other shapes) gives a RuntimeWarning
    naming the file and None, every object left as it was: that run starts afresh. Temporary files a
    killed run left next to it are removed."""
    if path is None:
        return None
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):   # also .PATH.json.<pid>.tmp
        stale.unlink(missing_ok=True)
    if not path.exists() and not path.with_suffix(".pt.json").exists():
        return None
    saved = {name: copy.deepcopy(obj.state_dict()) for name, obj in states.items()}
    g_state, rng = g.get_state(), torch.get_rng_state()
    try:
        return load_training_state(path, g, **states)
    except Exception as e:  # noqa: BLE001 -- any unreadable state: warn and start afresh
        for name, obj in states.items():
            obj.load_state_dict(saved[name])
        g.set_state(g_state)
        torch.set_rng_state(rng)
        warnings.warn(f"{path}: the training state cannot be resumed ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''}); starting this run afresh", RuntimeWarning,
                      stacklevel=3)
        return None


def iteration_run(cfg) -> tuple[torch.device, bool, torch.Tensor, torch.Generator]:
    """The setup the generative trainers share: seeds, device, AMP flag (CUDA only), the training
    images on the device and the run's CPU generator, from cfg's seed, device, amp, dataset, n_train."""
    from advlab import data
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    x_train, _ = data.batch(cfg.dataset, "train", n=cfg.n_train, seed=cfg.seed)
    return device, cfg.amp and device.type == "cuda", x_train.to(device), torch.Generator().manual_seed(cfg.seed)


def train_iterations(cfg, step_fn: Callable[[], dict], g: torch.Generator, states: dict, checkpoint=None,
                     desc: str = "train", postfix: dict[str, str] | None = None, progress: bool = True
                     ) -> tuple[list[dict], float]:
    """The iteration loop the generative trainers share: cfg.iters calls of step_fn() -> {loss: float}.

    Every cfg.log_every iterations the mean of each loss goes into the history (with the iteration
    and the training seconds so far, over all calls); every cfg.ckpt_every iterations, and at the end,
    `states` (name -> model or optimiser) and `g` are saved to `checkpoint`, which a later call resumes
    from (a run trained in chunks, e.g. on a CPU across days, is one run).
    postfix: progress-bar label -> format of the means, e.g. {"kl": "{kl:.1f}"}.
    Returns (history, training seconds over all calls); each history row also names the call that
    logged it ("call": 1, 2, ...), so a record shows how many chunks trained the run.
    """
    ckpt = Path(checkpoint) if checkpoint else None
    meta = resume_training_state(ckpt, g, **states) if ckpt else None
    start, history, before, calls = resumed_progress(meta, "iter")
    t0 = time.time() - before
    sums: dict[str, float] = {}
    summed = 0                                  # steps in `sums` (fewer than log_every after a resume)
    bar = tqdm(range(start, cfg.iters), desc=desc, disable=not progress, initial=start, total=cfg.iters)
    for it in bar:
        sums = {k: sums.get(k, 0.0) + v for k, v in step_fn().items()}
        summed += 1
        if (it + 1) % cfg.log_every == 0 or it + 1 == cfg.iters:
            means = {name: v / summed for name, v in sums.items()}
            history.append({"iter": it + 1} | {name: round(v, 5) for name, v in means.items()}
                           | {"seconds": round(time.time() - t0, 1), "call": calls})
            bar.set_postfix({label: fmt.format(**means) for label, fmt in (postfix or {}).items()})
            sums, summed = {}, 0
        if ckpt and ((it + 1) % cfg.ckpt_every == 0 or it + 1 == cfg.iters):
            save_training_state(ckpt, g, {"iter": it + 1, "history": history, "seconds": round(time.time() - t0, 1),
                                          "calls": calls}, **states)
    return history, time.time() - t0


def config_dict(cfg: TrainConfig) -> dict:
    """The TrainConfig as a plain dict (what the zoo manifest records)."""
    return asdict(cfg)
