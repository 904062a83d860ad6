"""`medr1-data diff` on two real builds: rows added, removed and changed by key, per source and column; changelog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medr1_data.build import run
from medr1_data.card import changelog_lines, replace_changelog
from medr1_data.cli import main
from medr1_data.diff import diff_releases
from medr1_data.recipe import load_recipe
from medr1_data.shards import MANIFEST, read_release


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo (v0.1.0) and the demo with a stricter `short_reasoning` threshold (v0.2.0)."""
    base = tmp_path_factory.mktemp("diff")
    old = run(load_recipe("demo"), base / "old", quiet=True)
    new = run(load_recipe("demo", ["version=0.2.0", "score.short_reasoning_tokens=130"]), base / "new", quiet=True)
    return {"old": old.out, "new": new.out}


def rows_by_key(folder: Path) -> dict[tuple[str, int], dict]:
    return {(r["id"], r["sample_idx"]): r for r in read_release(folder).to_pylist()}


def test_diff_counts_match_an_independent_row_comparison(builds) -> None:
    d = diff_releases(str(builds["old"]), str(builds["new"]))
    old, new = rows_by_key(builds["old"]), rows_by_key(builds["new"])
    added, removed = new.keys() - old.keys(), old.keys() - new.keys()
    changed = {k for k in new.keys() & old.keys() if new[k] != old[k]}
    assert d["rows"] == {
        "added": len(added),
        "removed": len(removed),
        "changed": len(changed),
        "unchanged": len(new.keys() & old.keys()) - len(changed),
    }
    assert min(len(added), len(removed), len(changed)) > 0  # the threshold really changed the release
    per_column = {c: sum(new[k][c] != old[k][c] for k in changed) for c in next(iter(new.values()))}
    assert d["columns_changed"] == {c: n for c, n in per_column.items() if n}
    assert set(d["columns_changed"]) <= {"quality", "quality_score"}
    for source, counts in d["by_source"].items():
        assert counts["added"] == sum(new[k]["source"] == source for k in added)
        assert counts["removed"] == sum(old[k]["source"] == source for k in removed)
        assert counts["changed"] == sum(new[k]["source"] == source for k in changed)
    assert d["key"] == ["id", "sample_idx"]
    assert d["old"]["version"] == "0.1.0" and d["new"]["version"] == "0.2.0"
    assert d["examples"]["removed"][0] == "{}#{}".format(*sorted(removed)[0])


def test_a_release_against_itself_has_no_changes(builds) -> None:
    d = diff_releases(str(builds["old"]), str(builds["old"]))
    assert d["rows"]["added"] == d["rows"]["removed"] == d["rows"]["changed"] == 0
    assert d["rows"]["unchanged"] == d["old"]["rows"] == 25 and d["columns_changed"] == {}


def test_cli_diff_prints_tables_writes_json_and_the_changelog(builds, tmp_path: Path, capsys) -> None:
    import shutil

    from huggingface_hub import DatasetCard

    new = tmp_path / "new"
    shutil.copytree(builds["new"], new)
    out_json = tmp_path / "diff.json"
    assert main(["diff", str(builds["old"]), str(new), "--json", str(out_json), "--changelog"]) == 0
    out = capsys.readouterr().out
    d = json.loads(out_json.read_text())
    total = d["rows"]
    assert f"all       {total['added']}      {total['removed']}        {total['changed']}" in out
    assert "changed column" in out and "quality_score" in out
    card = DatasetCard.load(new / "README.md")  # still a valid card
    (entry, previous) = changelog_lines(card.text)
    assert entry.startswith(
        f"v0.2.0 (compared with v0.1.0): {total['added']} traces added, {total['removed']} removed, "
        f"{total['changed']} changed"
    )
    assert "`quality_score`" in entry and "by source: medmcqa +" in entry
    assert previous == "v0.1.0: first release."
    assert json.loads((new / MANIFEST).read_text())["previous"] == {"version": "0.1.0", "ref": str(builds["old"])}
    # Rerunning gives the same card (the entry is replaced, not appended again).
    before = (new / "README.md").read_text()
    assert main(["diff", str(builds["old"]), str(new), "--changelog"]) == 0
    assert (new / "README.md").read_text() == before
    # The dry run now knows the bump.
    capsys.readouterr()
    assert main(["push", str(new), "--repo", "medr1/reasoning", "--version", "0.2.0", "--dry-run"]) == 0
    assert "version: v0.1.0 -> v0.2.0 (minor bump" in capsys.readouterr().out
    # A note of the recipe's own `card.changelog` stays, between the diff's entry and the older lines.
    note = "v0.2.0: stricter short-reasoning threshold."
    (new / "README.md").write_text(replace_changelog(before, [note, "v0.2.0: first release."]))
    assert main(["diff", str(builds["old"]), str(new), "--changelog"]) == 0
    assert changelog_lines((new / "README.md").read_text()) == [entry, note, previous]


def test_diff_errors_are_one_line(builds, tmp_path: Path, capsys) -> None:
    assert main(["diff", str(tmp_path / "nosuch"), str(builds["new"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medr1-data: error: ") and "no such release folder" in err and err.count("\n") == 1
    assert main(["diff", str(builds["new"]), str(builds["old"]), "--changelog"]) == 2
    assert "NEW's version 0.1.0 is not greater than OLD's 0.2.0" in capsys.readouterr().err
