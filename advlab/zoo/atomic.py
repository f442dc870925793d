"""Crash-safe file writes: a temporary file next to the target, fsync, then os.replace over it.

A reader, or a process started after a crash, sees the old file or the new one, never a truncated
mix: os.replace is atomic within one filesystem, the fsync makes the new bytes durable before the
rename publishes them, and the folder is fsynced after it so that the rename itself survives a
power cut (Linux). A crash before the rename leaves at most a `.NAME.*.tmp` file beside the target.

It lives in the zoo because the zoo is the lowest layer of advlab that writes files; evaluation/
(records, adversarial sets, reports) writes through it too.

`pause_point` serves the kill tests (tests/test_zoo_kill.py): with ADVLAB_PAUSE_AT=NAME the process
prints a line and sleeps at that point, so that a test can SIGKILL it exactly there.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace `path` by `data` atomically (creating parent folders); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:           # plain open: the file gets the umask's permissions
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """write_bytes for text (UTF-8): temporary file, fsync, rename."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj, indent: int | None = 2) -> Path:
    """json.dumps(obj, indent=indent) plus a final newline, written atomically."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n")


def write_report(folder: str | Path, name: str, record: dict, markdown: str) -> Path:
    """A recorded result as folder/name.json (indent 1) and its Markdown folder/name.md, each written
    atomically; prints where they went and returns the json's path."""
    out = Path(folder) / name
    write_text(out.with_suffix(".json"), json.dumps(record, indent=1) + "\n")
    write_text(out.with_suffix(".md"), markdown)
    print(f"written: {out}.json and .md")
    return out.with_suffix(".json")


def save_safetensors(tensors: dict, path: str | Path, metadata: dict | None = None) -> Path:
    """safetensors.torch.save_file, but atomic (the bytes are built in memory first)."""
    from safetensors.torch import save
    return write_bytes(path, save(tensors, metadata=metadata))


def fsync_dir(folder: Path) -> None:
    """fsync a folder after a rename in it, so the rename survives a power cut (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:                          # Windows cannot open a folder; its rename is durable enough
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def pause_point(name: str) -> None:
    """For kill tests only: with ADVLAB_PAUSE_AT=name, say so on stdout and sleep here (for a SIGKILL)."""
    if os.environ.get("ADVLAB_PAUSE_AT") == name:
        print(f"ADVLAB_PAUSE_AT {name}", flush=True)
        time.sleep(float(os.environ.get("ADVLAB_PAUSE_SECONDS", "600")))
