"""The evaluation commands' options pass through torchrun's own parser unchanged.

torchrun (torch.distributed.run) parses its whole command line before it starts the script, and
argparse rejects any string that is an ambiguous prefix of torchrun's options: `--n` could be
`--nnodes`, `--nproc_per_node`, `--node_rank`, ... So `--n` has the alias `--images`, and no other
option of these commands may be such a prefix."""
from __future__ import annotations

import re

import pytest
from torch.distributed.run import parse_args as torchrun_args

from advlab import cli
from advlab.evaluation import adaptive

COMMANDS = {"adaptive": lambda: adaptive.main(["--help"]), "defense-report": lambda: cli.main(["defense-report", "--help"]),
            "evaluate": lambda: cli.main(["evaluate", "--help"])}


def _options(command, capsys) -> set[str]:
    try:
        COMMANDS[command]()       # cli.main returns argparse's exit code, adaptive.main raises it
    except SystemExit:
        pass
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", capsys.readouterr().out)) - {"--help"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_but_n_reaches_the_script_through_torchrun(command, capsys):
    options = _options(command, capsys)
    assert {"--n", "--images", "--seed", "--device"} <= options
    with pytest.raises(SystemExit):        # the reason for --images: torchrun refuses --n itself
        torchrun_args(["--standalone", "--nproc_per_node", "2", "-m", "advlab.cli", command, "x", "--n", "8"])
    assert "ambiguous option: --n" in capsys.readouterr().err
    for opt in sorted(options - {"--n"}):
        argv = [command, "x", opt, "1"]
        got = torchrun_args(["--standalone", "--nproc_per_node", "2", "-m", "advlab.cli", *argv])
        assert got.training_script == "advlab.cli" and got.training_script_args == argv, opt


def test_images_is_n(monkeypatch):
    seen = {}
    monkeypatch.setattr(cli, "_evaluate", lambda a: seen.setdefault("n", a.n) and 0)
    cli.main(["evaluate", "fmnist/cnn", "--images", "12"])
    assert seen["n"] == 12
