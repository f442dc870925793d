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
