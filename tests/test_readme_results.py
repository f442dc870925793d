"""The README's table of adaptive results is the one the records give (leaderboard.update_readme)."""
from __future__ import annotations

import copy

import pytest

from advlab.evaluation import leaderboard, records

README = records.REPO / "README.md"


def test_readme_adaptive_table_matches_the_records():
    assert leaderboard.update_readme(README, check=True), (
        "README.md's adaptive table differs from docs/results/records; regenerate it with "
        "python -c \"from advlab.evaluation import leaderboard; leaderboard.update_readme()\"")


def test_a_changed_record_makes_the_check_fail(tmp_path):
    board = leaderboard.build()
    changed = copy.deepcopy(board)
    entry = next(e for e in changed["entries"] if "clean" in changed["table"][e])
    changed["table"][entry]["clean"]["acc"] += 0.01
    assert not leaderboard.update_readme(README, board=changed, check=True)


def test_rows_without_an_ensemble_record_say_so_and_never_call_a_single_attack_adaptive():
    table = leaderboard.readme_table(leaderboard.build())
    for line in table.splitlines()[2:]:
        worst = line.split(" | ")[3]
        assert worst.startswith("**") or worst.startswith("not yet measured with the ensemble"), line


def test_update_readme_without_markers_names_the_argument(tmp_path):
    p = tmp_path / "README.md"
    p.write_text("# no table here\n")
    with pytest.raises(ValueError, match="path: .* has no generated-table markers"):
        leaderboard.update_readme(p)
