"""Evaluation records: one json per (model or defense) x protocol, under docs/results/records/.

    records.write_record("model", "fmnist/pgd-at", "pgd40_linf0.1", result, attack=repr(atk), n=2000, seed=0)
    records.read_record("fmnist/pgd-at", "pgd40_linf0.1")["result"]["robust_acc"]
    records.evaluations("fmnist/pgd-at")["pgd40_linf0.1"]      # the zoo manifest's old `evaluations` dict

Why a file per result, as RobustBench keeps its leaderboard: a measurement is not a property of the
weights (the zoo manifest keeps weights, config, training command and history), many evaluations
of one model and of one defense accumulate, and a file per protocol lets two evaluations finish at
once without a lock, shows up in review as one new file, and is read by the README tables, the tests
and the lectures alike.

Layout: records_dir() / NAME / PROTOCOL.json, NAME with "/" written "__":
    fmnist__pgd-at/pgd40_linf0.1.json           a zoo model under an attack (`advlab evaluate --record`)
    lqvae+fmnist__cnn/defense_report_linf0.1.json   a defense (purifier + classifier) (`advlab defense-report --record`)
Each record: kind ("model" | "defense"), name, protocol, attack (repr), n, seed (of the test subset),
device, date, commit (of the code that ran it; null where not known), dirty (uncommitted changes
under advlab/), command, models ({zoo name: sha256 of the weights evaluated}), evaluations_key
([zoo model, key]: where the old manifest kept it) and result (the measured numbers). Every write
is atomic (advlab.zoo.atomic).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import subprocess
from pathlib import Path

KINDS = ("model", "defense")
REPO = Path(__file__).resolve().parents[2]
_PROTOCOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")


class RecordError(ValueError):
    """No records folder, or a record file that cannot be read."""


def records_dir(root: str | Path | None = None) -> Path:
    """The records folder: root if given, else $ADVLAB_RECORDS, else the first $ADVLAB_ZOO folder's
    records/ (a zoo other than the bundled one keeps its records beside it), else the checkout's
    docs/results/records, else the copy shipped in the wheel (advlab.resources)."""
    if root is not None:
        return Path(root)
    if os.environ.get("ADVLAB_RECORDS"):
        return Path(os.environ["ADVLAB_RECORDS"])
    from advlab import zoo
    if zoo.user_zoo_dirs():
        return zoo.user_zoo_dirs()[0] / "records"
    if (REPO / "docs" / "results").is_dir() and (REPO / "advlab").is_dir():
        return REPO / "docs" / "results" / "records"
    from advlab import resources
    shipped = resources.packaged()
    if shipped is not None and (shipped / "docs" / "results" / "records").is_dir():
        return shipped / "docs" / "results" / "records"      # the wheel's copy (read it; write with ADVLAB_RECORDS)
    raise RecordError(f"records: advlab runs from {REPO}, not from a repository checkout, and ships no "
                      "docs/results/records; set ADVLAB_RECORDS=DIR (or pass root=DIR)")


def record_path(name: str, protocol: str, root: str | Path | None = None) -> Path:
    """The json file of (name, protocol) under the records folder; ValueError for an unsafe name or protocol."""
    if not isinstance(name, str) or not name or ".." in name or name.startswith("/") or "\\" in name:
        raise ValueError(f"name: expected a model or defense name such as 'fmnist/pgd-at', got {name!r}")
    if not isinstance(protocol, str) or not _PROTOCOL.match(protocol):
        raise ValueError(f"protocol: expected a file-name-safe key such as 'pgd40_linf0.1', got {protocol!r}")
    return records_dir(root) / name.replace("/", "__") / f"{protocol}.json"


def git_commit(repo: Path = REPO) -> tuple[str | None, bool | None]:
    """(HEAD's sha, whether advlab/ has uncommitted changes) of the checkout; (None, None) outside one."""
    try:
        run = lambda *a: subprocess.run(["git", "-C", str(repo), *a], capture_output=True, text=True,  # noqa: E731
                                        timeout=20, check=True).stdout.strip()
        sha = run("rev-parse", "HEAD")
        dirty = bool(run("status", "--porcelain", "--untracked-files=no", "--", "advlab"))
        return sha, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def write_record(kind: str, name: str, protocol: str, result: dict, *, attack: str | None = None,
                 n: int | None = None, seed: int | None = None, device: str | None = None,
                 models: dict | None = None, command: str | None = None, evaluations_key: list | None = None,
                 provenance: dict | None = None, root: str | Path | None = None) -> dict:
    """Write (atomically, replacing an older one) and return the record of `name` under `protocol`.

    result: the measured numbers (json-serialisable). models: {zoo name: sha256} of the weights that
    were evaluated. evaluations_key: [zoo model, key] under which `evaluations(zoo model)` returns
    result (default [name, protocol] for a model). provenance: {date, commit, dirty, source} when
    they are known from elsewhere (a migration: null where unknown); default: today and this checkout.
    """
    from advlab.zoo import atomic
    if kind not in KINDS:
        raise ValueError(f"kind: must be one of {KINDS}, got {kind!r}")
    if not isinstance(result, dict):
        raise ValueError(f"result: expected a dict of measurements, got {type(result).__name__}")
    path = record_path(name, protocol, root)
    if provenance is None:
        commit, dirty = git_commit()
        provenance = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"), "commit": commit,
                      "dirty": dirty}
    rec = {"kind": kind, "name": name, "protocol": protocol, "attack": attack, "n": n, "seed": seed,
           "device": device, "date": provenance.get("date"), "commit": provenance.get("commit"),
           "dirty": provenance.get("dirty"), "command": command, "models": dict(models or {}),
           "evaluations_key": list(evaluations_key or ([name, protocol] if kind == "model" else [])),
           "result": result}
    if provenance.get("source"):
        rec["source"] = provenance["source"]
    atomic.write_json(path, rec)
    return rec


def read_record(name: str, protocol: str, root: str | Path | None = None) -> dict:
    """The record of `name` under `protocol` (FileNotFoundError naming the file when there is none)."""
    path = record_path(name, protocol, root)
    if not path.exists():
        raise FileNotFoundError(f"no record of {name!r} under {protocol!r}: {path} does not exist")
    return _load(path)


def _load(path: Path) -> dict:
    try:
        rec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordError(f"record {path}: not valid json ({e})") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("result"), dict):
        raise RecordError(f"record {path}: not a record (a dict with a 'result' dict)")
    return rec


def list_records(kind: str | None = None, root: str | Path | None = None) -> list[dict]:
    """Every record (of `kind`, when given), sorted by name and protocol."""
    folder = records_dir(root)
    recs = [_load(p) for p in sorted(folder.glob("*/*.json"))] if folder.is_dir() else []
    return [r for r in recs if kind is None or r.get("kind") == kind]


def evaluations(model: str, root: str | Path | None = None, zoo_root: str | Path | None = None) -> dict:
    """{key: result} of the evaluations of the zoo model's current weights: the dict the zoo manifest
    kept under manifest[model]["evaluations"] (same keys, same values). Records of other weights
    (before a re-training, or of another zoo under ADVLAB_ZOO) are left out; records of the float32
    file that the current float16 weights were converted from count (zoo.same_weights). An untrained
    model has none.
    """
    from advlab import zoo
    try:
        zoo.info(model, zoo_root)
    except zoo.NotTrainedError:
        return {}
    out = {}
    for rec in list_records(root=root):
        key = rec.get("evaluations_key") or []
        if len(key) == 2 and key[0] == model and zoo.same_weights(model, rec.get("models", {}).get(model), zoo_root):
            out[key[1]] = rec["result"]
    return out
