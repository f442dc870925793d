"""Run DEVICE = "cuda" code on a CPU-only machine and fail where real CUDA would fail on device mixing.

Most GPU bugs in teaching code are not numerical: a random tensor made on the CPU and added to a batch on
the GPU, `.numpy()` on a device tensor, a CPU generator passed to a CUDA factory. They only show up on a
machine with a GPU, which CI does not have. `FakeCuda` finds them on the CPU:

    from advlab.fake_cuda import FakeCuda
    with FakeCuda():
        model = zoo.load("fmnist/cnn", device="cuda")         # computes on the CPU, *reported* on cuda:0
        x, y = data.batch("fashion_mnist", n=8, device="cuda")
        model(x + torch.rand(8, 1, 28, 28))                   # RuntimeError: cpu and cuda:0 mixed, like CUDA

How: a torch function mode (torch.overrides.TorchFunctionMode) sees every torch call. Tensors sent to
"cuda" (`.to`, `.cuda()`, factories with `device=`, `Module.to`) stay on the CPU but are marked (an
attribute on the tensor object); the marks follow every result of an op on marked tensors; `.device`,
`.is_cuda` and `get_device()` report cuda:0 for marked tensors, so code that copies a tensor's device keeps
working. An op that mixes a marked tensor with an unmarked one of dimension >= 1 raises, as CUDA does (0-dim
CPU tensors mix freely there too); so do `.numpy()` of a marked tensor and a CUDA factory given a CPU
generator. Allowed, as on CUDA: indexing a device tensor with CPU indices, assigning CPU values into it
(`x[i] = v`, `copy_`), `.cpu()`, `.item()`, `.tolist()`. `torch.cuda.is_available()` answers True inside,
and `torch.cuda.synchronize`, events, streams, memory statistics and pinned memory are harmless stand-ins.
What it cannot see: kernels, numerics, speed, bf16 autocast (it stays off on CPU tensors), and tensors made
outside torch calls (autograd's own gradients are marked when read through `.grad` or `torch.autograd.grad`).
Every torch call pays a Python detour: small-op loops run about 4x slower than plain CPU code.

`python -m advlab.course run --fake-cuda` runs the notebooks with DEVICE = "cuda" under it (an IPython
startup file enters it in every kernel: `startup_code()`).
"""
from __future__ import annotations

import contextlib
from unittest import mock

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

CUDA = torch.device("cuda", 0)
_PASSTHROUGH = ("__get__", "__set__")    # property access: handled in __torch_function__ by name


def _tensors(obj, out: list) -> list:
    """The tensors in obj (nested tuples, lists and dict values), appended to out: a cheap tree flatten (this
    runs on every torch call)."""
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            _tensors(o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            _tensors(o, out)
    return out


def _is_cuda(device) -> bool:
    if device is None:
        return False
    if isinstance(device, int):                     # .to(0), device=0: the first GPU
        return True
    return torch.device(device).type == "cuda"


class FakeCuda(TorchFunctionMode):
    """The mode of the module docstring; use it as a context manager (it also patches torch.cuda and
    nn.Module.to/cuda/cpu for its duration)."""

    def __init__(self):
        super().__init__()
        self._token = object()              # tensors on the fake device carry it as t._fake_cuda
        self._patches = contextlib.ExitStack()

    # --- marks -------------------------------------------------------------------------------------
    def on(self, t) -> bool:
        return getattr(t, "_fake_cuda", None) is self._token and isinstance(t, torch.Tensor)

    def mark(self, out):
        for t in _tensors(out, []):
            t._fake_cuda = self._token
        return out

    def unmark(self, out):
        for t in _tensors(out, []):
            t.__dict__.pop("_fake_cuda", None)
        return out

    def _fresh(self, t: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        """A CPU<->"cuda" move is a copy on real hardware: never hand back the source object itself."""
        return t.clone() if t is src else t

    # --- the mode ----------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if name in _PASSTHROUGH:                                   # Tensor properties
            prop = getattr(getattr(func, "__self__", None), "__name__", "")
            out = func(*args, **kwargs)
            if name == "__get__" and args and self.on(args[0]):
                if prop == "device":
                    return CUDA
                if prop == "is_cuda":
                    return True
                if prop in ("grad", "data", "real", "imag", "T", "mT", "H", "mH"):
                    return self.mark(out) if isinstance(out, torch.Tensor) else out
            return out
        if name == "get_device" and args and self.on(args[0]):
            return 0
        if name in ("numpy", "__array__") and args and self.on(args[0]):
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the "
                            "tensor to host memory first. (advlab.fake_cuda: this tensor would be on the GPU)")
        if name == "cpu":
            return self.unmark(self._fresh(func(*args, **kwargs), args[0]))
        if name == "cuda":
            return args[0] if self.on(args[0]) else self.mark(args[0].clone())
        if name == "to":
            return self._to(func, args, kwargs)
        if name == "grad" and func is torch.autograd.grad:
            out = func(*args, **kwargs)
            inputs = kwargs.get("inputs", args[1] if len(args) > 1 else ())
            inputs = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
            return tuple(self.mark(g) if g is not None and self.on(i) else g for g, i in zip(out, inputs))
        # factories with device= (and *_like / new_* with an explicit device)
        device = kwargs.get("device")
        to_cuda = _is_cuda(device)
        if device is not None:
            kwargs["device"] = "cpu"
        kwargs.pop("pin_memory", None)                             # pinned host memory needs a real GPU
        gen = kwargs.get("generator")
        leaves = _tensors(kwargs, _tensors(args, []))
        marked = [t for t in leaves if self.on(t)]
        if to_cuda and gen is not None and not getattr(gen, "fake_cuda", False):
            raise RuntimeError(f"{name}: expected a 'cuda' device type for generator but found 'cpu' "
                               "(advlab.fake_cuda: a CPU generator cannot draw on the GPU; draw on the CPU "
                               "and .to(device), or make the generator on the device)")
        if marked and name not in ("__setitem__", "copy_", "__getitem__", "index_put_", "index_put"):
            plain = [t for t in leaves if not self.on(t) and t.dim() > 0]
            if plain:
                shapes = ", ".join(str(tuple(t.shape)) for t in plain[:3])
                raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two "
                                   f"devices, cuda:0 and cpu! ({name}: CPU tensor(s) of shape {shapes}; "
                                   "advlab.fake_cuda: these would be on different devices on a GPU)")
        if name == "__getitem__" and args and not self.on(args[0]):
            idx = [t for t in _tensors(args[1:], []) if self.on(t)]
            if idx and any(t.dim() > 0 for t in idx):
                raise RuntimeError("indices should be either on cpu or on the same device as the indexed "
                                   "tensor (cpu) (advlab.fake_cuda: GPU indices into a CPU tensor)")
        out = func(*args, **kwargs)
        if name == "__getitem__":
            return self.mark(out) if self.on(args[0]) else out
        if name in ("__setitem__", "copy_", "index_put_"):
            return out
        if to_cuda or (marked and not (device is not None and not to_cuda)):
            return self.mark(out)
        return out

    def _to(self, func, args, kwargs):
        src = args[0]
        target = kwargs.pop("device", None)
        rest = list(args[1:])
        if rest and isinstance(rest[0], torch.Tensor):             # .to(other): other's device and dtype
            other = rest.pop(0)
            kwargs.setdefault("dtype", other.dtype)
            target = CUDA if self.on(other) else torch.device("cpu")
        elif rest and isinstance(rest[0], (str, torch.device, int)):
            target = rest.pop(0)
        out = func(src, *rest, **kwargs)
        if target is None:                                         # a dtype change: stays where it was
            return self.mark(out) if self.on(src) else out
        if _is_cuda(target):
            return out if self.on(src) and out is src else self.mark(self._fresh(out, src))
        return self.unmark(self._fresh(out, src)) if self.on(src) else out

    # --- modules, torch.cuda -----------------------------------------------------------------------
    def _module_to(self, orig):
        mode = self

        def to(module, *args, **kwargs):
            target = kwargs.pop("device", None)
            rest = list(args)
            if rest and isinstance(rest[0], torch.Tensor):
                target = CUDA if mode.on(rest[0]) else torch.device("cpu")
                kwargs.setdefault("dtype", rest.pop(0).dtype)
            elif rest and isinstance(rest[0], (str, torch.device, int)):
                target = rest.pop(0)
            out = orig(module, *rest, **kwargs)
            if target is not None:
                tensors = [*module.parameters(), *module.buffers()]
                tensors += [p.grad for p in module.parameters() if p.grad is not None]
                (mode.mark if _is_cuda(target) else mode.unmark)(tensors)
            return out
        return to

    def __enter__(self):
        to = self._module_to(nn.Module.to)

        class _Event:
            def __init__(self, *a, **k): pass
            def record(self, *a, **k): pass
            def synchronize(self): pass
            def query(self): return True
            def wait(self, *a, **k): pass

        class Generator(torch.Generator):
            """torch.Generator(device="cuda") on the CPU, marked as a device generator."""
            def __new__(cls, device="cpu"):
                g = super().__new__(cls, "cpu")
                g.fake_cuda = _is_cuda(device)
                return g

        for target, value in (
                ("torch.cuda.is_available", lambda: True), ("torch.cuda.device_count", lambda: 1),
                ("torch.cuda.current_device", lambda: 0), ("torch.cuda.set_device", lambda *a: None),
                ("torch.cuda.synchronize", lambda *a, **k: None),
                ("torch.cuda.get_device_name", lambda *a: "fake CUDA device (advlab.fake_cuda, on the CPU)"),
                ("torch.cuda.Event", _Event), ("torch.cuda.current_stream", lambda *a: None),
                ("torch.cuda.manual_seed", lambda *a: None), ("torch.cuda.manual_seed_all", lambda *a: None),
                ("torch.cuda.memory_allocated", lambda *a: 0), ("torch.cuda.max_memory_allocated", lambda *a: 0),
                ("torch.cuda.reset_peak_memory_stats", lambda *a: None), ("torch.cuda.empty_cache", lambda: None),
                ("torch.cuda.is_bf16_supported", lambda *a, **k: True),
                ("torch.accelerator.current_accelerator", lambda *a, **k: None),   # optimisers ask for streams
                ("torch.Generator", Generator),
                ("torch.nn.Module.to", to),
                ("torch.nn.Module.cuda", lambda m, device=None: to(m, CUDA)),
                ("torch.nn.Module.cpu", lambda m: to(m, "cpu"))):
            self._patches.enter_context(mock.patch(target, value))
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._patches.close()


def startup_code() -> str:
    """An IPython startup file's text that runs the kernel under FakeCuda (kept open for the kernel's life)."""
    return ("from advlab.fake_cuda import FakeCuda as _FakeCuda\n"
            "_advlab_fake_cuda = _FakeCuda()\n"
            "_advlab_fake_cuda.__enter__()\n")

