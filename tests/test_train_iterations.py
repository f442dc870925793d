"""advlab.training.loop.train_iterations across calls: a run trained in chunks (stopped and resumed, e.g. on
a CPU across days) keeps its training seconds over all calls and says which call logged each history row."""
import json
from types import SimpleNamespace

import pytest
import torch

from advlab.training.loop import train_iterations


def _run(path, crash_at=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    done = []

    def step():
        if len(done) == crash_at:
            raise KeyboardInterrupt                          # the chunk ends here (a kill, the end of a session)
        loss = model(torch.randn(4, 2, generator=g)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        done.append(1)
        return {"loss": float(loss.detach())}
    out = train_iterations(SimpleNamespace(iters=6, log_every=2, ckpt_every=2), step, g, dict(model=model, opt=opt),
                           path, progress=False)
    return out, len(done)


def test_chunks_keep_seconds_and_name_their_call(tmp_path, monkeypatch):
    clock = iter(range(0, 100_000, 10))                     # every time.time() call advances 10 s
    monkeypatch.setattr("advlab.training.loop.time.time", lambda: float(next(clock)))
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "ck.pt", crash_at=3)                  # checkpoint after 2 iterations, killed in the 4th
    meta = json.loads((tmp_path / "ck.pt.json").read_text())
    assert meta["iter"] == 2 and meta["calls"] == 1 and meta["seconds"] > 0
    (hist, secs), steps = _run(tmp_path / "ck.pt")
    assert steps == 4 and [r["iter"] for r in hist] == [2, 4, 6] and [r["call"] for r in hist] == [1, 2, 2]
    assert hist[1]["seconds"] > meta["seconds"] and secs > hist[-1]["seconds"] - 1   # the first call's seconds count
    assert json.loads((tmp_path / "ck.pt.json").read_text())["calls"] == 2


def _epoch_run_killed_in_epoch_2(monkeypatch, cfg, **kw):
    """Run loop.train until it is killed while evaluating epoch 2 (epoch 1 checkpointed), as a chunk ends."""
    from advlab.training import loop
    real_accuracy, calls = loop.accuracy, []

    def accuracy_then_kill(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_accuracy(*a, **k)
    monkeypatch.setattr(loop, "accuracy", accuracy_then_kill)
    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg, progress=False, **kw)
    monkeypatch.setattr(loop, "accuracy", real_accuracy)


def test_epoch_loop_chunks_keep_seconds_and_name_their_call(tmp_path, monkeypatch):
    """loop.train (the classifiers' epochs, as fmnist/trades trains on this CPU in chunks): the same."""
    from advlab.training import loop
    clock = iter(range(0, 100_000, 10))
    monkeypatch.setattr("advlab.training.loop.time.time", lambda: float(next(clock)))
    cfg = loop.TrainConfig(arch="mlp", dataset="synthetic", epochs=3, n_train=128, n_test=32, batch_size=64, seed=0)
    _epoch_run_killed_in_epoch_2(monkeypatch, cfg, checkpoint=tmp_path / "ck.pt")
    meta = json.loads((tmp_path / "ck.pt.json").read_text())
    assert meta["epoch"] == 1 and meta["calls"] == 1 and meta["seconds"] > 0
    _, metrics = loop.train(cfg, checkpoint=tmp_path / "ck.pt", progress=False)
    hist = metrics["history"]
    assert [r["epoch"] for r in hist] == [1, 2, 3] and [r["call"] for r in hist] == [1, 2, 2]
    assert hist[0]["seconds"] < hist[1]["seconds"] < hist[2]["seconds"] <= metrics["train_seconds"]
    assert hist[1]["seconds"] > meta["seconds"]                           # the first call's seconds count


def test_histories_written_before_calls_were_counted_are_made_cumulative():
    """Old checkpoints restarted the seconds at every resumed call (fmnist/trades' epoch 5: 2789.9 s
    after epoch 4's 5457.4 s): a drop starts a new call, and the earlier calls' seconds are added."""
    from advlab.training.loop import cumulative_seconds
    old = [{"epoch": 1, "seconds": 100.0}, {"epoch": 2, "seconds": 200.0}, {"epoch": 3, "seconds": 50.0},
           {"epoch": 4, "seconds": 150.0}, {"epoch": 5, "seconds": 60.0}]
    got = cumulative_seconds(old)
    assert [r["seconds"] for r in got] == [100.0, 200.0, 250.0, 350.0, 410.0]
    assert [r["call"] for r in got] == [1, 1, 2, 2, 3]
    new = got + [{"epoch": 6, "seconds": 500.0, "call": 4}]
    assert cumulative_seconds(new) == new                               # rows that name their call are kept
    assert old[2]["seconds"] == 50.0                                    # the input is not changed


def test_iteration_loop_repairs_a_legacy_checkpoint(tmp_path, monkeypatch):
    """A checkpoint written by the old train_iterations (no "seconds" or "calls" saved, seconds restarted
    at the second call: fmnist/consistency's first chunks) goes on with the repaired history: the earlier
    calls' seconds count and this call is the third."""
    clock = iter(range(0, 100_000, 10))
    monkeypatch.setattr("advlab.training.loop.time.time", lambda: float(next(clock)))
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "ck.pt", crash_at=5)                  # checkpoint after 4 iterations
    path = tmp_path / "ck.pt.json"
    meta = json.loads(path.read_text())
    legacy = {"iter": 4, "history": [{"iter": 2, "loss": 1.0, "seconds": 300.0},
                                     {"iter": 4, "loss": 1.0, "seconds": 100.0}]}    # call 2 restarted its clock
    path.write_text(json.dumps(legacy))
    state = torch.load(tmp_path / "ck.pt", weights_only=True)
    state["meta"] = json.dumps(legacy)
    torch.save(state, tmp_path / "ck.pt")
    (hist, secs), steps = _run(tmp_path / "ck.pt")
    assert steps == 2 and [r["iter"] for r in hist] == [2, 4, 6] and [r["call"] for r in hist] == [1, 2, 3]
    assert [r["seconds"] for r in hist[:2]] == [300.0, 400.0]              # made cumulative
    assert hist[2]["seconds"] > 400.0 and secs > 400.0                    # the earlier calls' 400 s count
    assert meta["iter"] == 4


def test_epoch_loop_keeps_the_monitor_across_calls(tmp_path, monkeypatch):
    """The held-out monitor's rows of earlier calls stay in the run's metrics (fmnist/pgd-at's and fmnist/trades'
    manifests had lost those of the epochs before their last resumed call), each row names its epoch, and the
    monitor is told what the earlier checks saw (restore)."""
    from advlab.training import loop
    cfg = loop.TrainConfig(arch="mlp", dataset="synthetic", epochs=3, n_train=128, n_test=32, batch_size=64, seed=0)

    class Monitor:
        def __init__(self):
            self.restored = None

        def __call__(self, model, step):
            return {"pgd_acc": step / 100, "fgsm_acc": 0.5}

        def restore(self, rows):
            self.restored = [r["step"] for r in rows]
    _epoch_run_killed_in_epoch_2(monkeypatch, cfg, checkpoint=tmp_path / "ck.pt", monitor=Monitor())
    second = Monitor()
    _, metrics = loop.train(cfg, checkpoint=tmp_path / "ck.pt", progress=False, monitor=second)
    assert second.restored == [2]                          # epoch 1's check (2 steps of 64 per epoch)
    assert [(r["step"], r["epoch"]) for r in metrics["monitor"]] == [(2, 1), (4, 2), (6, 3)]


def test_overfit_monitor_restores_its_best_check():
    from advlab.training.adversarial import OverfitMonitor
    m = OverfitMonitor(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long), 0.1)
    m.restore([{"step": 1, "pgd_acc": 0.4, "fgsm_acc": 0.5}, {"step": 2, "pgd_acc": 0.6, "fgsm_acc": 0.7},
               {"step": 3, "pgd_acc": 0.2, "fgsm_acc": 0.9, "catastrophic_overfitting": True}])
    assert (m.best_pgd, m.fgsm_at_best, m.flagged) == (0.6, 0.7, 3)


def test_a_resume_inside_a_log_window_averages_the_steps_it_ran(tmp_path):
    """A checkpoint every 3 iterations, a log row every 4: the call resumed at iteration 3 sums one step
    before its first row (iteration 4); that row is the mean of that one step, not a quarter of it
    (the consistency model's history showed N = 40.5 of 81 from this bug)."""
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(1, 1)
    cfg = SimpleNamespace(iters=8, log_every=4, ckpt_every=3)
    steps = iter(range(100))

    def step():
        if next(steps) == 3:
            raise KeyboardInterrupt                          # killed after the checkpoint at iteration 3
        return {"n": 81.0}
    with pytest.raises(KeyboardInterrupt):
        train_iterations(cfg, step, g, dict(model=model), tmp_path / "ck.pt", progress=False)
    hist, _ = train_iterations(cfg, lambda: {"n": 81.0}, g, dict(model=model), tmp_path / "ck.pt", progress=False)
    assert [(r["iter"], r["n"]) for r in hist] == [(4, 81.0), (8, 81.0)]
