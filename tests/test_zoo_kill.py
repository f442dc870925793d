"""Kill tests (issue 15): a zoo save and a chunked `advlab evaluate` are SIGKILLed in the middle
(ADVLAB_PAUSE_AT makes the process stop at a named point: zoo.save between the weights' rename and
the manifest switch; the adversarial set between a chunk file and its index). Every file left must
load, and a rerun must complete with the result of an uninterrupted run."""
import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from advlab import cli, models, zoo

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
SAVE = ("import sys, torch\nfrom advlab import models, zoo\ntorch.manual_seed(int(sys.argv[2]))\n"
        "zoo.save('fmnist/mlp', models.build('mlp'), {}, {}, 'test', root=sys.argv[1])\n")


def _env(**extra):
    return {k: v for k, v in os.environ.items() if not k.startswith("ADVLAB_PAUSE")} | extra


def _kill_at(point: str, cmd: list, cwd, env, timeout: float = 300) -> None:
    """Run cmd until it prints `ADVLAB_PAUSE_AT point`, then SIGKILL it."""
    env = env | {"ADVLAB_PAUSE_AT": point}
    with open(cwd / "stderr.txt", "w") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            if select.select([proc.stdout], [], [], 1)[0] and proc.stdout.readline().startswith(f"ADVLAB_PAUSE_AT {point}"):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return
        proc.kill()
        proc.wait()
    pytest.fail(f"{cmd} never reached {point}: {(cwd / 'stderr.txt').read_text()[-2000:]}")


def _every_file_loads(folder):
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != "stderr.txt" and p.name != ".manifest.lock"]
    assert not [p for p in files if p.name.startswith(".") or p.suffix == ".tmp"], "temporary files left"
    for p in files:
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".safetensors":
            load_file(p)
    return files


def _state(seed):
    torch.manual_seed(seed)
    return models.build("mlp").state_dict()


def test_a_killed_zoo_save_leaves_the_old_model_and_a_rerun_completes(tmp_path):
    root = tmp_path / "zoo"
    subprocess.run([sys.executable, "-c", SAVE, str(root), "0"], check=True, env=_env(), cwd=tmp_path)
    _kill_at("zoo.save:weights-written", [sys.executable, "-c", SAVE, str(root), "1"], tmp_path, _env())
    assert len(_every_file_loads(root)) == 3       # the manifest, the old and the new weights
    old, loaded = _state(0), zoo.load("fmnist/mlp", root=root).state_dict()
    assert all(torch.equal(old[k], loaded[k]) for k in old), "the old model stays loadable"
    subprocess.run([sys.executable, "-c", SAVE, str(root), "1"], check=True, env=_env(), cwd=tmp_path)
    new, loaded = _state(1), zoo.load("fmnist/mlp", root=root).state_dict()
    assert all(torch.equal(new[k], loaded[k]) for k in new)
    assert len(list((root / "weights").iterdir())) == 1


def test_a_killed_chunked_evaluate_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, capsys):
    zoo_dir = tmp_path / "zoo"
    torch.manual_seed(0)
    zoo.save("fmnist/cnn", models.build("cnn", "fashion_mnist"), {"dataset": "fashion_mnist"}, {}, "test",
             root=zoo_dir)
    argv = ["evaluate", "fmnist/cnn", "--n", "30", "--chunk", "10", "--steps", "2", "--threads", "1"]
    (tmp_path / "ref").mkdir()
    monkeypatch.setenv("ADVLAB_ZOO", str(zoo_dir))
    monkeypatch.chdir(tmp_path / "ref")
    assert cli.main(argv) == 0                                   # the uninterrupted run
    reference = json.loads(capsys.readouterr().out)

    run = tmp_path / "run"
    run.mkdir()
    cmd = [sys.executable, "-m", "advlab.cli", *argv]
    _kill_at("advset:chunk-saved", cmd, run, _env(ADVLAB_ZOO=str(zoo_dir)))
    assert any(p.suffix == ".safetensors" for p in _every_file_loads(run / "build"))
    done = subprocess.run(cmd, cwd=run, env=_env(ADVLAB_ZOO=str(zoo_dir)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == reference
    _every_file_loads(run / "build")
