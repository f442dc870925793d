"""runs/: the tracked state of unfinished long evaluations (see runs/README.md). Every folder there must be
a readable chunk store whose run is named in the README, so that a later session knows the command
that resumes it; a run whose record has landed must not linger."""
import json
from pathlib import Path

from advlab.evaluation import shard

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs"


def _stores():
    return sorted(p for p in RUNS.glob("*/*") if p.is_dir())


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
