"""Argument checks shared by the whole library, and the one context manager that runs a model
in eval mode.

Every public function of advlab validates its inputs here, so that bad input raises one clear
`ValueError` naming the argument instead of a deep torch traceback. This module imports nothing
from advlab: every other module may import it.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn as nn

NORMS = ("linf", "l2")


def check_eps(eps, name: str = "eps", allow_none: bool = False) -> float | None:
    """eps must be finite and >= 0; minimal-perturbation attacks (CW, DeepFool) allow None = unbounded."""
    if eps is None and allow_none:
        return None
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or math.isnan(eps) or math.isinf(eps) or eps < 0:
        raise ValueError(f"{name}: must be a finite number >= 0, got {eps!r}")
    return float(eps)


def check_positive(v, name: str, integer: bool = False, minimum: float = 0.0, strict: bool = True):
    """v must be a (finite) number, or an integer if integer=True, > minimum (>= if strict=False); ValueError naming `name`."""
    kind = int if integer else (int, float)
    if isinstance(v, bool) or not isinstance(v, kind) or (not integer and (math.isnan(v) or math.isinf(v))):
        raise ValueError(f"{name}: must be a{'n integer' if integer else ' finite number'}, got {v!r}")
    if (v <= minimum) if strict else (v < minimum):
        raise ValueError(f"{name}: must be {'>' if strict else '>='} {minimum}, got {v!r}")
    return v


def check_int(v, name: str, minimum: int = 1) -> int:
    """v must be an int (not a bool) >= minimum; ValueError naming `name` otherwise."""
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name}: must be an int >= {minimum}, got {v!r}")
    return v


def check_norm(norm, allowed=NORMS) -> str:
    """norm must be one of `allowed` ('linf', 'l2'); ValueError naming it otherwise."""
    if norm not in allowed:
        raise ValueError(f"norm: must be one of {allowed}, got {norm!r}")
    return norm


def check_images(x, name: str = "x", shape: tuple | None = None) -> None:
    """Raise ValueError (naming the argument) unless x is a float image batch in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name}: expected a batch of images of shape (N, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor in [0, 1], got dtype {x.dtype}")
    if x.numel() and bool(torch.isnan(x).any()):
        raise ValueError(f"{name}: contains NaN")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name}: images must lie in [0, 1]; got range "
                         f"[{x.min().item():.4g}, {x.max().item():.4g}]")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{name}: expected images of shape {tuple(shape)}, got {tuple(x.shape[1:])}")


def check_labels(y, n: int, num_classes: int | None = None, name: str = "y") -> None:
    """Raise ValueError unless y holds n integer labels in [0, num_classes)."""
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of labels, got {type(y).__name__}")
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"{name}: expected {n} labels of shape ({n},), got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"{name}: labels must be integers, got dtype {y.dtype}")
    if n and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        raise ValueError(f"{name}: labels must lie in [0, {num_classes}), got range "
                         f"[{y.min().item()}, {y.max().item()}]")


@contextmanager
def eval_mode(model: nn.Module):
    """Run the model in eval mode and restore every module's own train flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, f in flags:
            m.training = f


def _expected_input(model) -> tuple | None:
    """(C, H, W) the model takes (H, W may be None: any size), from its `input_shape` attribute, a
    purifier's classifier's, or the first Conv2d's channels; None when nothing tells."""
    shape = getattr(model, "input_shape", None)
    if shape is not None:
        return tuple(shape)
    inner = getattr(model, "classifier", None)
    if isinstance(inner, nn.Module) and inner is not model:
        return _expected_input(inner)
    if isinstance(model, nn.Module):
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                return (m.in_channels, None, None)
            if isinstance(m, nn.Linear):
                return None
    return None


def _expected_numel(model) -> int | None:
    """C * H * W a flattening model takes: Sequential(Flatten(), Linear(D, ...), ...) takes D values per
    image (any C, H, W with that product); a purifier answers for its classifier; None when nothing tells."""
    inner = getattr(model, "classifier", None)
    if getattr(model, "input_shape", None) is None and isinstance(inner, nn.Module) and inner is not model:
        return _expected_numel(inner)
    if isinstance(model, nn.Sequential) and len(model) >= 2 and isinstance(model[0], nn.Flatten) \
            and model[0].start_dim == 1 and isinstance(model[1], nn.Linear):
        return model[1].in_features
    return None


def check_model(model, name: str = "model") -> None:
    """Raise ValueError unless model is an nn.Module or another callable (images -> logits)."""
    if not isinstance(model, nn.Module) and not callable(model):
        raise ValueError(f"{name}: expected an nn.Module mapping images to logits, got {type(model).__name__}")


def device_name(device, cpu_model: bool = False) -> str:
    """What a record says it ran on: the GPU's name ('NVIDIA H100 80GB HBM3'), or 'cpu (2 threads)';
    cpu_model=True gives 'CPU (<model name from /proc/cpuinfo>), 2 thread(s)' (the training reports' form)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if not cpu_model:
        return f"cpu ({torch.get_num_threads()} threads)"
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"CPU{' (' + model + ')' if model else ''}, {torch.get_num_threads()} thread(s)"


def check_device(device, name: str = "device") -> torch.device:
    """The torch.device that `device` names ("cpu", "cuda", "cuda:1", a torch.device); ValueError naming
    the argument for anything else, or for CUDA on a machine without it."""
    if isinstance(device, bool) or not isinstance(device, (str, torch.device)):
        raise ValueError(f"{name}: expected a device name such as 'cpu' or 'cuda', got {device!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{name}: not a device: {device!r} (use e.g. 'cpu', 'cuda' or 'cuda:0')") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}: {device!r} requested but CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{name}: {device!r} requested but this machine has {torch.cuda.device_count()} "
                         f"CUDA device(s)")
    return dev


def _first_param(model):
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p
    return None


def check_fit(model, x, y=None, num_classes: int | None = None, name: str = "x", label_name: str = "y"):
    """Check that images x (and labels y) fit `model` once, before any computation, and return them
    ready for it: (x, y).

    Raises ValueError naming the argument when x is not an image batch in [0, 1], when its channels
    or size differ from what the model takes (`model.input_shape`, the first conv's channels, or the
    in_features of a Sequential(Flatten(), Linear(...)); a purifier answers for its classifier), or when y does not hold len(x) integer labels in [0, num_classes). Documented conversions (never
    errors): floating x of another dtype becomes the model's parameter dtype, x moves to the model's
    device, and integer labels of any dtype become int64 on that device.
    """
    check_images(x, name)
    want = _expected_input(model)
    if want is not None:
        got = tuple(x.shape[1:])
        if want[0] is not None and got[0] != want[0]:
            raise ValueError(f"{name}: model expects {want[0]}-channel images, got {got[0]} channels "
                             f"(shape {tuple(x.shape)})")
        if want[1] is not None and got[1:] != tuple(want[1:]):
            raise ValueError(f"{name}: model expects images of size {want[1]}x{want[2]}, got "
                             f"{got[1]}x{got[2]} (shape {tuple(x.shape)})")
    else:
        numel = _expected_numel(model)
        if numel is not None and math.prod(x.shape[1:]) != numel:
            raise ValueError(f"{name}: model expects images of {numel} values (C*H*W), got "
                             f"{'x'.join(map(str, x.shape[1:]))} = {math.prod(x.shape[1:])} "
                             f"(shape {tuple(x.shape)})")
    p = _first_param(model)
    if p is not None:
        if x.device != p.device:
            x = x.to(p.device)
        if p.is_floating_point() and x.dtype != p.dtype and x.dtype in (torch.float64, torch.float16) \
                and p.dtype == torch.float32:
            x = x.to(p.dtype)
    if y is not None:
        check_labels(y, len(x), num_classes, label_name)
        y = y.to(device=x.device, dtype=torch.long)
    return x, y
