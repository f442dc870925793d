"""runs/: the tracked state of unfinished long evaluations and trainings (see runs/README.md). Every folder
there must be a readable chunk store (or, under runs/training/, a packed training state) whose run is named
in the README, so that a later session knows the command that resumes it; a run whose record (or zoo
entry) has landed must not linger."""
import json
import re
from pathlib import Path


from advlab.evaluation import shard
from advlab.training.zoo_entry import checkpoint_key

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs"


def _stores():
    return sorted(p for p in RUNS.glob("*/*") if p.is_dir() and p.parent.name != "training")


def test_every_run_folder_is_a_whole_chunk_store_named_in_the_readme():
    """A chunk file is START_FINGERPRINT.json (its first image and its images, evaluation.adaptive); the run's
    image count comes from its command in the README's row (`--n N` or `--images N`)."""
    readme = (RUNS / "README.md").read_text()
    for folder in _stores():
        key = json.loads((folder / "key.json").read_text())
        label, _, dig = folder.name.rpartition("_")
        assert dig == shard.digest(key), f"{folder}: its name does not match its key.json"
        rows = [line for line in readme.splitlines() if f"{folder.parent.name}/{label}_" in line]
        assert rows, f"{folder}: not described in runs/README.md"
        n = int(re.search(r"--(?:n|images) (\d+)", rows[0]).group(1))
        files = [f for f in folder.glob("*.json") if f.stem != "key"]
        assert files and all(re.fullmatch(r"\d+_[0-9a-f]{16}", f.stem) for f in files), folder
        starts = sorted(int(f.stem.split("_")[0]) for f in files)
        assert all(s % key["chunk"] == 0 and s < n for s in starts) and len(set(starts)) == len(starts), folder
        for f in files:
            rec = json.loads(f.read_text())
            s = int(f.stem.split("_")[0])
            assert rec["key_digest"] == dig and rec["data"]["n"] == min(key["chunk"], n - s), f
        assert len(starts) < -(-n // key["chunk"]), f"{folder}: every chunk is done; land its record"


def test_every_carried_training_state_is_whole_and_named_in_the_readme():
    from advlab import zoo
    readme = (RUNS / "README.md").read_text()
    for folder in sorted(p for p in (RUNS / "training").glob("*") if p.is_dir()):
        info = json.loads((folder / "state.json").read_text())
        assert (folder / "tensors.safetensors").is_file(), folder
        assert info["source"] == folder.name + ".pt", f"{folder}: packed from {info['source']}"
        assert f"training/{folder.name}" in readme, f"{folder}: not described in runs/README.md"
        name, _, key = folder.name.rpartition("_")
        entry = name.replace("__", "/")
        assert entry in zoo.REGISTRY, f"{folder}: {entry} is not a zoo entry"
        try:
            landed = zoo.info(entry)
        except zoo.NotTrainedError:
            continue
        # the zoo may hold an earlier training of the entry (a retrain is carried); once this run has landed
        # (the manifest's config is the run's: same key) the carried state must go
        assert checkpoint_key(landed["config"]) != key, f"{folder}: its run has landed in the zoo; delete the folder"
