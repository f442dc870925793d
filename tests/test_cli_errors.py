"""Issue 15: the CLI's own errors are one line `advlab CMD: message` on stderr naming the option or the
model, with exit status 2 and no traceback; a truncated resume file is a one-line warning and the
run starts that state again."""
import json

import pytest
import torch

from advlab import cli, models, zoo

pytestmark = pytest.mark.usefixtures("one_thread")


def _fails(capsys, argv, *names):
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == 2, (argv, rc, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"advlab {argv[0]}: "), lines
    for name in names:
        assert name in lines[0], (name, lines[0])


EVAL = ["evaluate", "fmnist/cnn"]


@pytest.mark.parametrize("argv, names", [
    (EVAL + ["--n", "0"], ["--n", "0"]),
    (EVAL + ["--n", "-5"], ["--n", "-5"]),
    (EVAL + ["--n", "20000"], ["--n", "20000", "10000"]),
    (EVAL + ["--n", "abc"], ["--n", "abc"]),
    (EVAL + ["--eps", "-1"], ["--eps", "-1"]),
    (EVAL + ["--eps", "nan"], ["--eps", "nan"]),
    (EVAL + ["--alpha", "inf"], ["--alpha"]),
    (EVAL + ["--steps", "0"], ["--steps"]),
    (EVAL + ["--chunk", "0"], ["--chunk"]),
    (EVAL + ["--seed", "-1"], ["--seed"]),
    (EVAL + ["--threads", "-2"], ["--threads"]),
    (EVAL + ["--device", "bogus"], ["--device", "bogus"]),
    (EVAL + ["--attack", "bogus"], ["--attack", "bogus"]),
    (["evaluate", "fmnist/nope"], ["fmnist/nope", "fmnist/cnn"]),
    (["train", "fmnist/nope"], ["fmnist/nope"]),
    (["train", "fmnist/cnn", "--set", "epochs"], ["--set", "NAME=VALUE"]),
    (["train", "fmnist/cnn", "--device", "tpu:x"], ["--device"]),
    (["defense-report", "nope"], ["nope", "lqvae"]),
    (["defense-report", "lqvae", "--classifier", "fmnist/nope"], ["--classifier", "fmnist/nope"]),
    (["defense-report", "lqvae", "--n", "20000"], ["--n"]),
    (["defense-report", "lqvae", "--eot", "0"], ["--eot"]),
    (["defense-report", "lqvae", "--adaptive-n", "0"], ["--adaptive-n"]),
    (["defense-report", "lqvae", "--device", "bogus"], ["--device"]),
    (["course", "run", "--device", "bogus"], ["--device"]),
])
def test_a_bad_option_is_one_line_naming_it(capsys, argv, names):
    _fails(capsys, argv, *names)


def test_an_unknown_config_field_is_named(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fails(capsys, ["train", "fmnist/mlp", "--profile", "quick", "--out", str(tmp_path / "z"), "--set", "bogus=1"],
           "--set bogus", "fmnist/mlp")
    _fails(capsys, ["defense-report", "lqvae", "--n", "8", "--device", "cpu", "--set", "bogus=1"], "--set bogus")


@pytest.fixture
def tmp_zoo(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVLAB_ZOO", str(tmp_path / "zoo"))
    monkeypatch.setenv("ADVLAB_ZOO_BUNDLED", "0")    # fmnist/mlp untrained: only this zoo
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    zoo.save("fmnist/cnn", models.build("cnn", "fashion_mnist"), {"dataset": "fashion_mnist"}, {}, "test")
    return tmp_path


def test_zoo_errors_are_one_line_naming_the_model(capsys, tmp_zoo):
    _fails(capsys, ["evaluate", "fmnist/mlp", "--n", "4"], "fmnist/mlp", "advlab train fmnist/mlp --profile full")
    rec = zoo.info("fmnist/cnn")
    path = tmp_zoo / "zoo" / rec["file"]
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    _fails(capsys, ["evaluate", "fmnist/cnn", "--n", "4"], "fmnist/cnn", "refusing to load")
    manifest = tmp_zoo / "zoo" / "manifest.json"
    manifest.write_text(manifest.read_text()[:40])
    _fails(capsys, ["evaluate", "fmnist/cnn", "--n", "4"], "fmnist/cnn", "not valid json")


def test_advlab_traceback_shows_the_traceback(tmp_zoo, monkeypatch):
    monkeypatch.setenv("ADVLAB_TRACEBACK", "1")
    with pytest.raises(zoo.NotTrainedError, match="fmnist/mlp"):
        cli.main(["evaluate", "fmnist/mlp", "--n", "4"])


def test_a_truncated_resume_file_warns_in_one_line_and_the_run_completes(capsys, tmp_zoo):
    argv = ["evaluate", "fmnist/cnn", "--n", "8", "--chunk", "4", "--steps", "1", "--threads", "1"]
    assert cli.main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    state = next((tmp_zoo / "build" / "eval").glob("*.json"))
    state.write_text(state.read_text()[:30])          # as a crash during an in-place write left it (before issue 15)
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == first and "Traceback" not in captured.err
    warning = [line for line in captured.err.splitlines() if "RuntimeWarning" in line]
    assert len(warning) == 1 and state.name in warning[0] and "corrupt" in warning[0], captured.err
    json.loads(state.read_text())                     # rewritten whole


@pytest.mark.parametrize("argv", [
    ["train", "fmnist/consistency", "--set", "iters=40", "--set", "cpu_bf16=true", "eval_n=10"],
    ["defense-report", "lqvae", "--set", "iters=40", "--set", "cpu_bf16=true", "eval_n=10"],
])
def test_every_set_counts_when_given_more_than_once(monkeypatch, argv):
    # argparse's nargs="*" keeps only the last --set: `--set a=1 --set b=2` used to drop a=1 silently
    seen = {}
    monkeypatch.setattr(cli, "_train", lambda args: seen.setdefault("set", args.set) and 0)
    monkeypatch.setattr(cli, "_defense_report", lambda args: seen.setdefault("set", args.set) and 0)
    assert cli.main(argv) == 0
    assert seen["set"] == ["iters=40", "cpu_bf16=true", "eval_n=10"]
