"""runs/: the tracked state of unfinished long evaluations and trainings (see runs/README.md). Every folder
there must be a readable chunk store (or, under runs/training/, a packed training state) whose run is named
in the README, so that a later session knows the command that resumes it; a run whose record (or zoo
entry) has landed must not linger."""
import json
from pathlib import Path

import pytest

from advlab.evaluation import shard

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs"


def _stores():
    return sorted(p for p in RUNS.glob("*/*") if p.is_dir() and p.parent.name != "training")


def test_every_run_folder_is_a_whole_chunk_store_named_in_the_readme():
    readme = (RUNS / "README.md").read_text()
    for folder in _stores():
        key = json.loads((folder / "key.json").read_text())
        label, _, dig = folder.name.rpartition("_")
        assert dig == shard.digest(key), f"{folder}: its name does not match its key.json"
        assert f"{folder.parent.name}/{label}_" in readme, f"{folder}: not described in runs/README.md"
        starts = [int(f.stem) for f in folder.glob("*.json") if f.stem.isdigit()]
        assert starts and all(s % key["chunk"] == 0 and s < key["n"] for s in starts), folder
        for s in starts:
            rec = json.loads((folder / f"{s}.json").read_text())
            assert rec["key_digest"] == dig and rec["data"]["n"] == min(key["chunk"], key["n"] - s), (folder, s)
        assert len(starts) < -(-key["n"] // key["chunk"]), f"{folder}: every chunk is done; land its record"


def test_every_carried_training_state_is_whole_and_named_in_the_readme():
    from advlab import zoo
    readme = (RUNS / "README.md").read_text()
    for folder in sorted(p for p in (RUNS / "training").glob("*") if p.is_dir()):
        info = json.loads((folder / "state.json").read_text())
        assert (folder / "tensors.safetensors").is_file(), folder
        assert info["source"] == folder.name + ".pt", f"{folder}: packed from {info['source']}"
        assert f"training/{folder.name}" in readme, f"{folder}: not described in runs/README.md"
        entry = folder.name.rpartition("_")[0].replace("__", "/")
        assert entry in zoo.REGISTRY, f"{folder}: {entry} is not a zoo entry"
        with pytest.raises(zoo.NotTrainedError):   # once the entry has landed the carried state must go
            zoo.info(entry)
