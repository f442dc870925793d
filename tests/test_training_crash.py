"""Issue 15, crash safety of training: a run killed (SIGKILL) while it writes a checkpoint leaves only
loadable files, and a resumed run finishes with the weights of an uninterrupted one; a damaged
checkpoint gives a warning and a fresh start instead of a crash.

The kill lands exactly inside a write through advlab.training.loop's test hook: ADVLAB_CRASH_AT
="state:k" (or "meta:k") makes the k-th write of that kind touch ADVLAB_CRASH_MARKER once its
temporary file is complete and then sleep before the rename; the test kills the process there.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from advlab.training import loop

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3
SCRIPT = f"""
import json, sys, torch
torch.set_num_threads(1)
from advlab.training import loop
cfg = loop.TrainConfig(arch="mlp", dataset="synthetic", epochs={EPOCHS}, n_train=256, n_test=64, batch_size=64,
                       device="cpu")
model, metrics = loop.train(cfg, checkpoint=sys.argv[1] if sys.argv[1] != "-" else None, progress=False)
torch.save(model.state_dict(), sys.argv[2])
print("epochs", json.dumps([h["epoch"] for h in metrics["history"]]))
"""


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADVLAB_CRASH")}
    return env | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"} | extra


def _run(ckpt, out, **env):
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(ckpt), str(out)], capture_output=True, text=True,
                         timeout=300, env=_env(**env), cwd=ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res


def _kill_inside(ckpt, out, point: str, marker: Path) -> None:
    """Start the training with the crash hook at `point` and SIGKILL it once the hook fires."""
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(ckpt), str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=_env(ADVLAB_CRASH_AT=point, ADVLAB_CRASH_MARKER=str(marker)),
                            cwd=ROOT)
    try:
        deadline = time.time() + 240
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"the run ended before the hook fired:\n{proc.stdout.read()[-3000:]}")
            if time.time() > deadline:
                raise AssertionError("the crash hook did not fire within 240 s")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _assert_every_file_loads(folder: Path) -> list[str]:
    """Every file in folder loads: json as json, anything else as a weights_only torch checkpoint."""
    names = []
    for p in sorted(folder.iterdir()):
        names.append(p.name)
        if p.name.endswith(".json") or p.name.endswith(".json.tmp") or ".json." in p.name:
            json.loads(p.read_text())
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
            assert {"model", "opt", "sched", "g", "torch_rng", "meta"} <= set(state), p.name
    return names


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "w.pt"
    _run("-", out)
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize("point, left_epoch", [("state:1", None), ("state:2", 1), ("meta:2", 2)])
def test_kill_inside_a_checkpoint_write_leaves_loadable_files_and_resume_finishes(tmp_path, uninterrupted,
                                                                                    point, left_epoch):
    ckpt_dir = tmp_path / "ckpt"
    ckpt, out = ckpt_dir / "run.pt", tmp_path / "w.pt"
    _kill_inside(ckpt, out, point, tmp_path / "marker")
    names = _assert_every_file_loads(ckpt_dir)
    assert any(n.endswith(".tmp") for n in names), names          # the write was under way
    if left_epoch is None:
        assert not ckpt.exists() and not ckpt.with_suffix(".pt.json").exists()
    else:   # the state the resume trusts: the last one renamed into place
        meta = json.loads(torch.load(ckpt, weights_only=True)["meta"])
        assert meta["epoch"] == left_epoch
    res = _run(ckpt, out)
    assert f"epochs {json.dumps(list(range(1, EPOCHS + 1)))}" in res.stdout
    assert (left_epoch is None) == ("resuming" not in res.stdout)
    assert not any(n.endswith(".tmp") for n in os.listdir(ckpt_dir))   # a resumed run sweeps them
    assert json.loads(ckpt.with_suffix(".pt.json").read_text())["epoch"] == EPOCHS
    resumed = torch.load(out, weights_only=True)
    for k, a in uninterrupted.items():
        assert torch.allclose(a.float(), resumed[k].float(), atol=1e-5), k


def _cfg(**kw):
    return loop.TrainConfig(**(dict(arch="mlp", dataset="synthetic", epochs=2, n_train=256, n_test=32,
                                     batch_size=64, device="cpu") | kw))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "json-without-state"])
def test_a_damaged_checkpoint_warns_and_the_run_starts_afresh(tmp_path, damage):
    cfg = _cfg()
    full, _ = loop.train(cfg, progress=False)
    ckpt = tmp_path / "c.pt"
    loop.train(cfg, checkpoint=ckpt, progress=False)
    if damage == "truncated":
        blob = ckpt.read_bytes()
        ckpt.write_bytes(blob[: len(blob) // 2])
    elif damage == "garbage":
        ckpt.write_bytes(b"not a checkpoint")
    else:
        ckpt.unlink()
    with pytest.warns(RuntimeWarning, match="starting this run afresh"):
        model, metrics = loop.train(cfg, checkpoint=ckpt, progress=False)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    for (k, a), b in zip(full.state_dict().items(), model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k
    assert torch.load(ckpt, weights_only=True)["model"].keys() == full.state_dict().keys()


def test_train_iterations_survives_a_damaged_checkpoint(tmp_path):
    cfg = type("Cfg", (), dict(iters=4, log_every=2, ckpt_every=2))()
    g = torch.Generator().manual_seed(0)
    ckpt = tmp_path / "it.pt"
    history, _ = loop.train_iterations(cfg, lambda: {"loss": 1.0}, g, {"model": nn.Linear(2, 2)}, ckpt,
                                       progress=False)
    assert [h["iter"] for h in history] == [2, 4]
    ckpt.write_bytes(ckpt.read_bytes()[:40])
    with pytest.warns(RuntimeWarning, match="it.pt"):
        history, _ = loop.train_iterations(cfg, lambda: {"loss": 1.0}, g, {"model": nn.Linear(2, 2)}, ckpt,
                                           progress=False)
    assert [h["iter"] for h in history] == [2, 4]                  # all four iterations again


def test_a_state_that_half_fits_leaves_every_object_as_it_was(tmp_path):
    """The first object loads, the second does not (other shapes): the first is put back, nothing is
    half-resumed."""
    g = torch.Generator().manual_seed(0)
    loop.save_training_state(tmp_path / "s.pt", g, {"iter": 1, "history": []}, a=nn.Linear(2, 2), b=nn.Linear(3, 3))
    a, b = nn.Linear(2, 2), nn.Linear(4, 4)
    before = {k: v.clone() for k, v in a.state_dict().items()}
    g_before = g.get_state()
    with pytest.warns(RuntimeWarning, match="starting this run afresh"):
        assert loop.resume_training_state(tmp_path / "s.pt", g, a=a, b=b) is None
    assert all(torch.equal(before[k], v) for k, v in a.state_dict().items())
    assert torch.equal(g.get_state(), g_before)


def test_resume_trusts_the_state_when_the_json_lags_behind(tmp_path):
    """A crash between the two renames leaves the new state with the old PATH.json: the state's own
    meta wins, so the resumed run neither repeats nor skips an epoch."""
    cfg = _cfg(epochs=3)
    full, _ = loop.train(cfg, progress=False)
    ckpt = tmp_path / "c.pt"
    loop.train(_cfg(epochs=3), checkpoint=ckpt, progress=False)
    ckpt.with_suffix(".pt.json").write_text(json.dumps({"epoch": 1, "history": []}))
    state = torch.load(ckpt, weights_only=True)
    assert json.loads(state["meta"])["epoch"] == 3
    model, metrics = loop.train(cfg, checkpoint=ckpt, progress=False)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    for (k, a), b in zip(full.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
