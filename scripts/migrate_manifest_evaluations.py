"""One-off (issue 13): move every `evaluations` entry of advlab/zoo/manifest.json to a record under
docs/results/records/ (advlab.evaluation.records), then drop `evaluations` from the manifest.

    python scripts/migrate_manifest_evaluations.py          # run once, from the repository root

The manifest's weights, sha256s, configs, commands and histories are untouched (checked). What the
old entries do not say stays null: the code commit and date of each run (`commit`, `date`), and the
device of `advlab evaluate` runs. `source` says where a record came from: the manifest key and the
commit that last changed that entry (with its date); `models` gives the sha256 of each zoo model
involved as the manifest had it at that commit. Running it again finds nothing to move.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from advlab import purifiers, zoo
from advlab.evaluation import records
from advlab.zoo import atomic

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "advlab/zoo/manifest.json"
GREY = "grey box (attack on classifier, then defense)"


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def history() -> list[tuple[str, str, dict]]:
    """(commit, date, manifest) of every commit that changed the manifest, newest first."""
    out = []
    for line in git("log", "--format=%H %ad", "--date=short", "--", MANIFEST).splitlines():
        sha, date = line.split()
        try:
            out.append((sha, date, json.loads(git("show", f"{sha}:{MANIFEST}"))))
        except (subprocess.CalledProcessError, json.JSONDecodeError):
            continue
    return out


def recorded_in(hist, model: str, key: str, value) -> tuple[str | None, str | None, dict]:
    """The oldest commit of the newest unbroken run of commits whose manifest holds this value."""
    found = (None, None, {})
    for sha, date, man in hist:
        if man.get(model, {}).get("evaluations", {}).get(key) != value:
            break
        found = (sha, date, man)
    return found


def migrate() -> list[Path]:
    man = zoo.read_manifest(ROOT / "advlab" / "zoo")
    hist = history()
    written = []
    for model, rec in sorted(man.items()):
        for key, result in sorted(rec.get("evaluations", {}).items()):
            commit, date, then = recorded_in(hist, model, key, result)
            sha_then = lambda m: then.get(m, {}).get("sha256") if then else None  # noqa: E731
            source = {"file": MANIFEST, "key": [model, key], "last_changed_in_commit": commit, "commit_date": date}
            provenance = {"date": None, "commit": None, "dirty": None, "source": source}
            if key.startswith("defense_report_"):
                clf = result["classifier"]
                middle, eps = key[len("defense_report_"):].rsplit(f"_{clf}_linf", 1)
                defense = next(d for d in sorted(purifiers.names(), key=len, reverse=True) if middle.startswith(d))
                tag = middle[len(defense):]
                name, protocol = f"{defense}+{clf}", f"defense_report{tag}_linf{eps}"
                written.append(records.record_path(name, protocol))
                records.write_record("defense", name, protocol, result, attack=result[GREY]["attack"],
                                     n=result[GREY]["n"], seed=result["test_subset_seed"], device=result.get("device"),
                                     models={model: sha_then(model), clf: sha_then(clf)},
                                     command=result.get("command"), evaluations_key=[model, key],
                                     provenance=provenance)
            else:
                written.append(records.record_path(model, key))
                records.write_record("model", model, key, result, attack=result["attack"], n=result["n"],
                                     seed=result["test_subset_seed"], device=None, models={model: sha_then(model)},
                                     command=None, evaluations_key=[model, key], provenance=provenance)
            assert sha_then(model) == rec["sha256"], (model, key, "evaluated other weights than the zoo's")
    return written


def main() -> None:
    path = ROOT / MANIFEST
    before = zoo.read_manifest(path.parent)
    written = migrate()
    after = {name: {k: v for k, v in rec.items() if k != "evaluations"} for name, rec in before.items()}
    for name, rec in after.items():   # only `evaluations` goes; weights and their checksums stay
        assert rec == {k: v for k, v in before[name].items() if k != "evaluations"}
        assert zoo.sha256_file(path.parent / rec["file"]) == rec["sha256"], name
    for name, rec in before.items():
        expected = {rec_key: res for rec_key, res in rec.get("evaluations", {}).items()}
        assert records.evaluations(name) == expected, name     # the compatibility view gives back the old dict
    atomic.write_json(path, dict(sorted(after.items())))
    print("\n".join(str(p.relative_to(ROOT)) for p in written) or "nothing to migrate")


if __name__ == "__main__":
    main()
