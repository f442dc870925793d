"""The leaderboard (lecture 11): every defense, and the undefended and adversarially trained
classifiers, against every attack, read from the evaluation records.

    from advlab.evaluation import leaderboard
    board = leaderboard.build()                      # reads docs/results/records/*/*.json
    paths = leaderboard.write(board, "build/leaderboard")
    # leaderboard.md (the table), leaderboard.json (every cell), bars.png, eps_curves.png, throughput.png
    advlab leaderboard --out build/leaderboard        # the same from the command line (main(argv))

A cell is one measured accuracy with its n, its device and the attack (repr) that produced it; the
table shows "acc (n N, DEVICE)", and where several records measure the same entry x column it keeps
the lowest robust accuracy (the strongest attack known; the json keeps every measurement). Columns:
clean, PGD-40 (white box on a classifier), AutoAttack, grey box (PGD crafted on the classifier, then
the defense), adaptive PGD-40 (defense_report: one PGD-40 end to end, an upper bound), the attacks of
evaluation.adaptive (own accuracies where the run was `individual`; min over the backwards), the
per-image worst case with its 95% interval, the sanity check and the purification throughput.

Sources: records (kind "model": {clean_acc, robust_acc}; kind "defense": a defense_report's rows or
an adaptive_evaluation result), and, when `reports` is given (by default: only while the records
folder holds no defense record), the defense-report jsons in docs/results/*.json.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

COLUMNS = ("clean", "PGD-40", "AutoAttack", "grey box", "adaptive PGD-40", "APGD-CE", "APGD-DLR", "PGD-EoT",
           "Square", "transfer", "worst case")
FAMILY = {"apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "pgd-eot": "PGD-EoT", "square": "Square",
          "transfer": "transfer"}


def short_device(device) -> str:
    """'H100', 'cpu, 1 thread', 'unknown': what a cell cites."""
    if not device:
        return "unknown"
    d = str(device)
    m = re.search(r"\b([AHLBV]\d{2,3}|RTX \w+|T4)\b", d)
    if m and "cpu" not in d.lower():
        return m.group(1)
    t = re.search(r"(\d+) thread", d)
    return f"cpu, {t.group(1)} thread{'s' * (t.group(1) != '1')}" if t else d.replace("CPU", "cpu")


def _cell(entry, column, acc, n, device, attack=None, source=None, **extra) -> dict:
    return {"entry": entry, "column": column, "acc": None if acc is None else float(acc), "n": n,
            "device": short_device(device), "attack": attack, "source": source} | extra


# ----------------------------------------------------------------------------- reading records


def _from_model_record(rec: dict, src: str) -> list[dict]:
    r, name = rec["result"], rec["name"]
    column = {"pgd40": "PGD-40", "autoattack": "AutoAttack"}.get(rec["protocol"].split("_")[0], rec["protocol"])
    out = []
    if "clean_acc" in r:
        out.append(_cell(name, "clean", r["clean_acc"], r.get("n", rec.get("n")), rec.get("device"), None, src))
    if "robust_acc" in r:
        out.append(_cell(name, column, r["robust_acc"], r.get("n", rec.get("n")), rec.get("device"),
                         r.get("attack", rec.get("attack")), src))
    return out


def _row(r: dict, prefix: str):
    """The (key, row) of a defense_report record's flat result whose key starts with prefix."""
    return next(((k, v) for k, v in r.items() if k.startswith(prefix) and isinstance(v, dict)), (None, None))


def _from_report_rows(r: dict, name: str, classifier: str, device, src: str) -> tuple[list, list, list]:
    """Cells, eps curves and throughputs of a defense_report, flat (records) or nested (report json)."""
    if "clean" in r and isinstance(r["clean"], dict) and "defense" in r["clean"]:   # report json: flatten
        flat = {"clean (classifier alone)": r["clean"]["classifier"], "clean (defense)": r["clean"]["defense"],
                "undefended": r["undefended"], "grey box": r["grey_box"],
                f"adaptive ({r.get('adaptive_model', '')})": r["adaptive"]}
        flat |= {f"sanity: adaptive at eps {s['eps']:g}": s for s in r.get("sanity", {}).get("rows", [])}
        r = r | flat | {"purify_images_per_s": r.get("purify_speed", {}).get("images_per_s")}
    cells, curves = [], []
    for prefix, entry, column in (("clean (classifier", classifier, "clean"), ("undefended", classifier, "PGD-40"),
                                  ("clean (defense", name, "clean"), ("grey box", name, "grey box"),
                                  ("adaptive", name, "adaptive PGD-40")):
        key, row = _row(r, prefix)
        if row is not None and row.get("acc") is not None:
            attack = row.get("attack") if row.get("attack") not in ("-", None) else None
            note = key[key.find("(") + 1:-1] if column == "adaptive PGD-40" else None
            extra = {"sanity": r.get("sanity_passed", r.get("sanity", {}).get("passed"))} if note else {}
            cells.append(_cell(entry, column, row["acc"], row.get("n"), device, attack, src, note=note, **extra))
    sweep = [{"eps": float(k.rsplit(" ", 1)[1]), "acc": v["acc"], "n": v.get("n")} for k, v in r.items()
             if k.startswith("sanity: adaptive at eps") and isinstance(v, dict)]
    if sweep:
        curves.append({"entry": name, "device": short_device(device), "source": src, "points": sorted(sweep, key=lambda p: p["eps"])})
    speed = [{"entry": name, "images_per_s": r["purify_images_per_s"], "n": r.get("purify_speed", {}).get("n"),
              "device": short_device(device), "source": src}] if r.get("purify_images_per_s") else []
    return cells, curves, speed


def _from_adaptive(res: dict, name: str, device, src: str) -> tuple[list, list, list]:
    n = res["n"]
    cells = [_cell(name, "clean", res["clean"]["vote"]["acc"], n, device, None, src)]
    first = res["settings_run"][0]
    for row in res["attacks"]:
        if row["setting"] == first and "own" in row:
            cells.append(_cell(name, FAMILY.get(row["name"], row["name"]), row["own"]["vote"]["acc"], n, device,
                               row["attack"], src, note=row["backward"], ci95=row["own"]["vote"]["ci95"]))
    h = res["headline"]
    s = res.get("sanity", {})
    cells.append(_cell(name, "worst case", h["acc"], n, device, "adaptive ensemble (" + res["mode"] + ")", src,
                       ci95=h["ci95"], note=f"won: {res['strongest']['attack']}; {h['what']}",
                       sanity=s.get("passed"), profile=res.get("profile")))
    curves = [{"entry": name, "device": short_device(device), "source": src,
               "points": [{"eps": c["eps"], "acc": c["acc"], "n": c["n"]} for c in s.get("eps_curve", [])]}]
    speed = [{"entry": name, "images_per_s": res["purify_images_per_s"], "n": res.get("purify_speed_n"),
              "device": short_device(device), "source": src}] if res.get("purify_images_per_s") else []
    return cells, curves if s.get("eps_curve") else [], speed


def _of_current_weights(rec: dict) -> bool:
    """False when the record names a zoo model whose weights it measured are no longer the zoo's
    (zoo.same_weights: the current file or the float32 file it was converted from)."""
    from advlab import zoo
    for name, sha in (rec.get("models") or {}).items():
        try:
            if not zoo.same_weights(name, sha):
                return False
        except ValueError:      # not a zoo name (a user's model): nothing to compare
            continue
    return True


def read_records(root=None, current_only: bool = False) -> tuple[list, list, list]:
    """(cells, eps curves, throughputs) of every record under the records folder; current_only keeps
    the records of the zoo's current weights only."""
    from advlab.evaluation import records
    cells, curves, speeds = [], [], []
    for rec in records.list_records(root=root):
        if current_only and not _of_current_weights(rec):
            continue
        src = f"records/{rec['name'].replace('/', '__')}/{rec['protocol']}.json"
        r = rec["result"]
        if r.get("kind") == "adaptive_evaluation":
            c, cv, sp = _from_adaptive(r, rec["name"], rec.get("device") or r.get("device"), src)
        elif rec["kind"] == "defense":
            clf = r.get("classifier") or rec["name"].split("+", 1)[-1]
            c, cv, sp = _from_report_rows(r, rec["name"], f"{clf} (undefended)", rec.get("device") or r.get("device"), src)
        else:
            c, cv, sp = _from_model_record(rec, src), [], []
        cells += c
        curves += cv
        speeds += sp
    return cells, curves, speeds


def read_reports(folder) -> tuple[list, list, list]:
    """(cells, curves, throughputs) of the defense-report jsons (clean/grey_box/adaptive/sanity) in folder."""
    cells, curves, speeds = [], [], []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            r = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            continue
        if not isinstance(r, dict) or not {"clean", "grey_box", "adaptive"} <= set(r):
            continue
        clf = r.get("test_subset", {}).get("classifier") or r.get("classifier", "classifier")
        name = f"{r['defense'].split('(')[0]} ({path.stem})"
        device = r.get("device") or r.get("purify_speed", {}).get("device")
        c, cv, sp = _from_report_rows(r, name, f"{clf} (undefended)", device, path.name)
        cells += c
        curves += cv
        speeds += sp
    return cells, curves, speeds


# ----------------------------------------------------------------------------- the board


def _threat_model_of(source) -> str | None:
    """'Linf' or 'L2' from a record's file name (pgd40_linf0.1.json), None when it names neither."""
    m = re.search(r"_(linf|l2)[\d.]", str(source or "").lower())
    return {"linf": "Linf", "l2": "L2"}[m.group(1)] if m else None


def build(records_root=None, reports="auto", threat_model: str | None = None, current_only: bool = False) -> dict:
    """The leaderboard as a dict: entries (sorted by worst case, else lowest robust accuracy), columns,
    table[entry][column] (the kept cell), cells (every measurement), eps curves, throughputs.
    reports: a folder of defense-report jsons, None for none, "auto" for docs/results while the records
    hold no defense record. threat_model: "Linf" or "L2" keeps the robust cells of records under that
    norm (clean cells are kept from every record); None keeps all. current_only: only the records of
    the zoo's current weights (zoo.list uses it)."""
    from advlab.evaluation import records
    if threat_model not in (None, "Linf", "L2"):
        raise ValueError(f"threat_model: None, 'Linf' or 'L2', got {threat_model!r}")
    cells, curves, speeds = read_records(records_root, current_only)
    if threat_model is not None:
        cells = [c for c in cells if c["column"] == "clean" or _threat_model_of(c["source"]) == threat_model]
    if reports == "auto":
        has_defense = any(c["column"] == "grey box" or c["column"] == "worst case" for c in cells)
        reports = None if has_defense else records.REPO / "docs" / "results"
    if reports is not None and Path(reports).is_dir():
        c, cv, sp = read_reports(reports)
        cells, curves, speeds = cells + c, curves + cv, speeds + sp
    table: dict = {}
    for c in cells:
        if c["acc"] is None:
            continue
        row = table.setdefault(c["entry"], {})
        old = row.get(c["column"])
        if old is None or (c["column"] == "clean" and (c["n"] or 0) > (old["n"] or 0)) \
                or (c["column"] != "clean" and c["acc"] < old["acc"]):
            row[c["column"]] = c   # clean: the largest n; robust: the strongest attack
    for s in speeds:
        old = table.setdefault(s["entry"], {}).get("throughput")
        if old is None or s["images_per_s"] > old["images_per_s"]:
            table[s["entry"]]["throughput"] = s
    columns = [c for c in COLUMNS if any(c in row for row in table.values())]
    robust = lambda e: min([v["acc"] for k, v in table[e].items() if k not in ("clean", "throughput")] or [2.0])  # noqa: E731
    entries = sorted(table, key=lambda e: (-(table[e]["worst case"]["acc"] if "worst case" in table[e] else robust(e)), e))
    return {"entries": entries, "columns": columns, "table": table, "cells": cells, "eps_curves": curves,
            "throughput": speeds}


def paired(records_root=None, protocol_prefix: str = "adaptive_") -> list[dict]:
    """Every two ensemble records on the same images, compared image by image (adaptive.paired_comparison):
    [{"a", "b", "acc_a", "acc_b", "ci95_a", "ci95_b", "intervals_overlap", "both", "a_only", "b_only", "neither",
    "p_value", ...}], most significant first. Two entries whose intervals overlap may still differ: the images both
    keep or both lose carry no information about which is better, and the paired test leaves them out."""
    from itertools import combinations
    from advlab.evaluation import records
    from advlab.evaluation.adaptive import paired_comparison
    recs = [r for r in records.list_records(root=records_root)
            if r["protocol"].startswith(protocol_prefix) and "per_image" in r.get("result", {})]
    out = []
    for ra, rb in combinations(recs, 2):
        a, b = ra["result"], rb["result"]
        if a.get("subset") is None or a.get("subset") != b.get("subset") or a.get("eps") != b.get("eps"):
            continue
        ha, hb = a["headline"], b["headline"]
        out.append({"a": ra["name"], "b": rb["name"], "acc_a": ha["acc"], "acc_b": hb["acc"], "ci95_a": ha["ci95"],
                    "ci95_b": hb["ci95"], "intervals_overlap": ha["ci95"][0] <= hb["ci95"][1] and hb["ci95"][0] <= ha["ci95"][1]}
                   | paired_comparison(a, b))
    return sorted(out, key=lambda r: r["p_value"])


def cell_text(c: dict | None) -> str:
    """A cell as the table shows it: 'acc% [CI] (n N, device)', a throughput, or '-' for none."""
    if c is None:
        return "-"
    if "images_per_s" in c:
        return f"{c['images_per_s']:,.0f} img/s (n {c.get('n') or '?'}, {c['device']})"
    ci = f" [{100 * c['ci95'][0]:.1f}, {100 * c['ci95'][1]:.1f}]" if c.get("ci95") else ""
    return f"{100 * c['acc']:.1f}%{ci} (n {c['n']}, {c['device']})"


def strongest_single(row: dict) -> tuple[str, dict] | None:
    """(column, cell) of the lowest accuracy any single attack reached on this entry (grey box included,
    the ensemble's worst case and clean excluded), or None: the upper bound to show where the ensemble
    has not run, and the single attack an optimistic evaluation would have quoted where it has."""
    single = [(k, v) for k, v in row.items()
              if k not in ("clean", "throughput", "worst case") and v.get("acc") is not None]
    return min(single, key=lambda kv: kv[1]["acc"]) if single else None


def markdown(board: dict) -> str:
    """The whole leaderboard as a markdown table, one row per entry, with sanity and throughput."""
    cols = board["columns"] + ["sanity", "throughput"]
    lines = ["| entry | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for e in board["entries"]:
        row = board["table"][e]
        wc = row.get("worst case") or row.get("adaptive PGD-40")
        sanity = "-" if not wc or wc.get("sanity") is None else ("passed" if wc["sanity"] else "FAILED")
        cells = [cell_text(row.get(c)) for c in board["columns"]] + [sanity, cell_text(row.get("throughput"))]
        lines.append(f"| {e} | " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
    lines += ["", "Each cell: accuracy (n images, device); where several measurements exist, the lowest robust "
              "accuracy is shown (leaderboard.json keeps all, with the attack that produced each). 'adaptive PGD-40' "
              "is a single attack (an upper bound); 'worst case' is the per-image worst case over the ensemble of "
              "advlab.evaluation.adaptive with its Wilson 95% interval."]
    return "\n".join(lines)


README_START = "<!-- adaptive-table: generated by advlab.evaluation.leaderboard.update_readme; do not edit -->"
README_END = "<!-- adaptive-table: end -->"


def readme_table(board: dict) -> str:
    """The README's table of the honest numbers: per defense (and per adversarially trained classifier),
    clean, grey box and the per-image worst case of the adaptive ensemble with its 95% interval and the
    attack that broke the most images. An entry the ensemble has not measured says so and shows its
    strongest single-attack record as what it is: an upper bound."""
    lines = ["| defense or model | clean | grey box | strongest adaptive: per-image worst case [95% CI] | "
             "won by | sanity |", "|---|---|---|---|---|---|"]
    for e in sorted(board["entries"]):
        row = board["table"][e]
        clean, grey = cell_text(row.get("clean")), cell_text(row.get("grey box"))
        wc = row.get("worst case")
        if wc:
            won = wc.get("note", "").split(";")[0].removeprefix("won: ")
            sanity = "passed" if wc.get("sanity") else "FAILED" if wc.get("sanity") is False else "-"
            lines.append(f"| {e} | {clean} | {grey} | **{cell_text(wc)}** | {won} | {sanity} |")
            continue
        bound = strongest_single(row)
        text = "not yet measured with the ensemble" + (
            f" (strongest single attack on record, {bound[0]}: {cell_text(bound[1])}, an upper bound)" if bound else "")
        lines.append(f"| {e} | {clean} | {grey} | {text} | - | - |")
    return "\n".join(lines)


def update_readme(path="README.md", board: dict | None = None, check: bool = False) -> bool:
    """Rewrite the README's generated table (between README_START and README_END) from the records;
    check=True writes nothing and returns whether the README already agrees."""
    path = Path(path)
    text = path.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"path: {path} has no generated-table markers ({README_START!r} ... {README_END!r})")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = head + README_START + "\n" + readme_table(board or build()) + "\n" + README_END + tail
    if check:
        return new == text
    if new != text:
        from advlab.zoo import atomic
        atomic.write_text(path, new)
    return True


def plots(board: dict, out: Path) -> list[Path]:
    """bars.png (clean and lowest robust accuracy per entry), eps_curves.png, throughput.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    entries = board["entries"]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(entries) + 1.5))
    for i, e in enumerate(entries):
        row = board["table"][e]
        best = row.get("worst case") or (strongest_single(row) or (None, None))[1]
        for off, c, color, label in ((-0.2, row.get("clean"), "tab:gray", "clean"),
                                     (0.2, best, "tab:red", "robust (worst case or strongest attack)")):
            if c is not None:
                ax.barh(i + off, 100 * c["acc"], 0.4, color=color, label=label if i == 0 else None)
                ax.text(100 * c["acc"] + 1, i + off, f"{100 * c['acc']:.1f}% (n {c['n']})", va="center", fontsize=7)
    ax.set_yticks(range(len(entries)), entries, fontsize=8)
    ax.set_xlim(0, 115)
    ax.set_xlabel("accuracy (%)")
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    fig.tight_layout()
    paths.append(out / "bars.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    if board["eps_curves"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        for cv in board["eps_curves"]:
            pts = cv["points"]
            ax.plot([p["eps"] for p in pts], [100 * p["acc"] for p in pts], marker="o",
                    label=f"{cv['entry']} {Path(cv['source']).stem} (n {pts[0]['n']}, {cv['device']})")
        ax.set_xlabel("Linf eps")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out / "eps_curves.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    sp = [(e, board["table"][e]["throughput"]) for e in entries if "throughput" in board["table"][e]]
    if sp:
        fig, ax = plt.subplots(figsize=(6, 0.4 * len(sp) + 1.2))
        ax.barh(range(len(sp)), [s["images_per_s"] for _, s in sp], color="tab:blue")
        ax.set_yticks(range(len(sp)), [f"{e} ({s['device']})" for e, s in sp], fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("purified images per second (log)")
        fig.tight_layout()
        paths.append(out / "throughput.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def write(board: dict, out="build/leaderboard") -> list[Path]:
    """leaderboard.md, leaderboard.json and the plots under out (atomic writes); returns the paths."""
    from advlab.zoo import atomic
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [atomic.write_text(out / "leaderboard.md", markdown(board) + "\n"),
             atomic.write_json(out / "leaderboard.json", board)]
    return paths + plots(board, out)


def main(argv=None) -> int:
    """`advlab leaderboard --out build/leaderboard [--records DIR] [--reports DIR|none|auto]`."""
    import argparse
    p = argparse.ArgumentParser(prog="advlab leaderboard", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="build/leaderboard")
    p.add_argument("--records", default=None, help="records folder (default: docs/results/records)")
    p.add_argument("--reports", default="auto", help="folder of defense-report jsons, 'none', or 'auto'")
    a = p.parse_args(argv)
    board = build(a.records, None if a.reports == "none" else a.reports)
    paths = write(board, a.out)
    print(markdown(board))
    print("\nwrote " + ", ".join(str(x) for x in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
