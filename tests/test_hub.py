"""`medr1-data push` against a local stand-in for the Hub API: atomic commits, tags, refusals, interruptions."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import constants, set_client_factory
from huggingface_hub.utils._http import default_client_factory

from medr1_data.build import run
from medr1_data.cli import main
from medr1_data.diff import diff_releases
from medr1_data.recipe import load_recipe
from medr1_data.shards import MANIFEST, sha256_file
from tests.hub_server import HubStandIn

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_standin_SECRET_4f2a9c"
TOKEN_ENV = "MEDR1_TEST_HUB_TOKEN"
REPO = "medr1-test/reasoning"
# huggingface_hub hands raw bytes to httpx2 with `data=` (its deprecation, not ours).
pytestmark = pytest.mark.filterwarnings("ignore:Use .content=<...>. to upload raw bytes:DeprecationWarning")


class LocalOnly(httpx2.HTTPTransport):
    """A transport that reaches 127.0.0.1 only: nothing in these tests can talk to the real Hub."""

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.host != "127.0.0.1":
            raise AssertionError(f"a test tried to reach {request.url}")
        return super().handle_request(request)


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """v0.1.0: the demo in 5+ small shards; v0.2.0: a stricter quality signal, default shard size (3 shards)."""
    base = tmp_path_factory.mktemp("releases")
    v1 = run(load_recipe("demo", ["output.shard_bytes=9000"]), base / "v1", quiet=True)
    v2 = run(
        load_recipe("demo", ["version=0.2.0", "score.short_reasoning_tokens=130"]),
        base / "v2",
        quiet=True,
    )
    return {"v1": v1.out, "v2": v2.out}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStandIn]:
    """The stand-in server, with huggingface_hub pointed at it and the token in the environment."""
    with HubStandIn(TOKEN) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv(TOKEN_ENV, TOKEN)
        # The stand-in speaks the LFS upload protocol; real pushes with hf_xet installed upload through Xet.
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        set_client_factory(lambda: httpx2.Client(transport=LocalOnly(), follow_redirects=True, timeout=30))
        try:
            yield server
        finally:
            set_client_factory(default_client_factory)


def push(folder: Path, version: str, *extra: str) -> int:
    """`medr1-data push` in this process."""
    return main(["push", str(folder), "--repo", REPO, "--version", version, "--token-env", TOKEN_ENV, *extra])


def release_files(folder: Path) -> dict[str, bytes]:
    """Every file of a release folder by its path in the repository."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def remote_files(hub: HubStandIn, rev: str) -> dict[str, bytes]:
    """Every file at a revision of the stand-in repo, LFS objects resolved, without the initial .gitattributes."""
    files = hub.files(REPO, rev)
    return {
        p: (b.content if b.sha256 is None else hub.lfs[b.sha256]) for p, b in files.items() if p != ".gitattributes"
    }


def test_push_commits_checks_and_tags(releases, hub, capsys) -> None:
    assert push(releases["v1"], "0.1.0") == 0
    repo = hub.repos[REPO]
    assert set(repo.tags) == {"v0.1.0"} and repo.tags["v0.1.0"] == repo.branches["main"]
    assert remote_files(hub, "v0.1.0") == release_files(releases["v1"])
    manifest = json.loads((releases["v1"] / MANIFEST).read_text())
    assert len(manifest["files"]) >= 4
    for entry in manifest["files"]:
        assert hub.files(REPO, "v0.1.0")[entry["path"]].sha256 == entry["sha256"]
    commits = [path for method, path in hub.requests if method == "POST" and "/commit/" in path]
    assert len(commits) == 1  # one atomic commit for the whole release
    out, err = capsys.readouterr()
    assert "tagged v0.1.0" in out
    assert TOKEN not in out + err


def test_next_version_deletes_old_shards_and_keeps_the_old_tag(releases, hub, tmp_path: Path) -> None:
    assert push(releases["v1"], "0.1.0") == 0
    assert push(releases["v2"], "0.2.0") == 0
    assert remote_files(hub, "v0.2.0") == release_files(releases["v2"])  # v1's 5+ shard names are gone
    assert remote_files(hub, "v0.1.0") == release_files(releases["v1"])  # the old tag still serves the old files
    # The diff of the two tags, downloaded from the stand-in, equals the diff of the two folders.
    remote = diff_releases(f"{REPO}@v0.1.0", f"{REPO}@v0.2.0", cache_dir=tmp_path / "cache")
    local = diff_releases(str(releases["v1"]), str(releases["v2"]))
    assert remote["rows"] == local["rows"] and remote["by_source"] == local["by_source"]
    assert min(local["rows"][k] for k in ("added", "removed", "changed")) > 0


def test_existing_tag_and_lower_version_are_refused(releases, hub, capsys) -> None:
    assert push(releases["v2"], "0.2.0") == 0
    head = hub.repos[REPO].branches["main"]
    capsys.readouterr()
    assert push(releases["v2"], "0.2.0") == 2
    assert (
        capsys.readouterr().err == f"medr1-data: error: datasets/{REPO} already has the tag v0.2.0: a published "
        "version is never replaced\n"
    )
    assert push(releases["v1"], "0.1.0") == 2
    assert "0.1.0 is not greater than the latest release v0.2.0" in capsys.readouterr().err
    assert hub.repos[REPO].branches["main"] == head and set(hub.repos[REPO].tags) == {"v0.2.0"}


def test_moved_branch_is_a_clear_error_and_commits_nothing(releases, hub, capsys) -> None:
    hub.create_repo(REPO)
    hub.move_branch_on_preupload = True  # someone else commits between our read of main and our commit
    assert push(releases["v1"], "0.1.0") == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after the upload progress bars
    assert last.startswith(f"medr1-data: error: datasets/{REPO}: main moved while pushing")
    assert "nothing was committed" in last
    assert set(remote_files(hub, "main")) == {"NOTES.md"}  # only the other client's commit
    assert hub.repos[REPO].tags == {}
    assert push(releases["v1"], "0.1.0") == 0  # rerunning publishes on top of the new head
    assert set(remote_files(hub, "v0.1.0")) == {"NOTES.md", *release_files(releases["v1"])}


def test_interrupted_upload_leaves_the_previous_version_intact(releases, hub) -> None:
    import threading

    assert push(releases["v1"], "0.1.0") == 0
    before = hub.repos[REPO].branches["main"]
    hub.hold_uploads = threading.Event()
    hub.upload_started.clear()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(HF_HUB_DISABLE_XET="1", PYTHONPATH=str(ROOT))
    args = ["push", str(releases["v2"]), "--repo", REPO, "--version", "0.2.0", "--token-env", TOKEN_ENV]
    proc = subprocess.Popen([sys.executable, "-m", "medr1_data.cli", *args], env=env, cwd=ROOT)
    try:
        assert hub.upload_started.wait(60), "the push never started uploading"
        proc.send_signal(signal.SIGKILL)  # killed mid-upload
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    hub.hold_uploads.set()
    assert hub.repos[REPO].branches["main"] == before
    assert set(hub.repos[REPO].tags) == {"v0.1.0"}
    assert remote_files(hub, "main") == release_files(releases["v1"])
    hub.hold_uploads = None
    assert push(releases["v2"], "0.2.0") == 0  # the same command again completes the release
    assert remote_files(hub, "v0.2.0") == release_files(releases["v2"])


def test_commit_without_tag_is_completed_by_rerunning(releases, hub, capsys) -> None:
    hub.fail_next_tag = True
    assert push(releases["v1"], "0.1.0") == 2
    last = capsys.readouterr().err.splitlines()[-1]
    head = hub.repos[REPO].branches["main"]
    assert f"commit {head[:12]} is on main untagged; run the push again" in last
    assert hub.repos[REPO].tags == {}
    commits = len(hub.repos[REPO].commits)
    assert push(releases["v1"], "0.1.0") == 0  # nothing to upload again: the same commit gets its tag
    assert hub.repos[REPO].tags == {"v0.1.0": head} and len(hub.repos[REPO].commits) == commits


def test_dry_run_contacts_nothing_and_never_prints_the_token(releases, capsys, monkeypatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)

    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"--dry-run tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    assert push(releases["v1"], "0.1.0", "--dry-run") == 0
    out, err = capsys.readouterr()
    manifest = json.loads((releases["v1"] / MANIFEST).read_text())
    for entry in manifest["files"]:
        assert f"add     {entry['path']}" in out
        assert f"{entry['bytes']:,} bytes  sha256 {entry['sha256'][:16]}" in out
    assert "version: v0.1.0 (no previous version recorded here" in out
    assert f"token: from ${TOKEN_ENV} (set)" in out
    assert TOKEN not in out + err


def test_push_refusals_before_contacting_anything(releases, capsys, monkeypatch, tmp_path: Path) -> None:
    import shutil

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert push(releases["v1"], "0.1.0") == 2
    assert f"${TOKEN_ENV} is not set" in capsys.readouterr().err
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert push(releases["v1"], "0.3.0", "--dry-run") == 2
    assert "does not match the release's version 0.1.0" in capsys.readouterr().err
    assert push(releases["v1"], "1.0", "--dry-run") == 2
    assert "'1.0' is not X.Y.Z" in capsys.readouterr().err
    copy = tmp_path / "copy"
    shutil.copytree(releases["v1"], copy)
    shard = next((copy / "data").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    assert push(copy, "0.1.0", "--dry-run") == 2
    assert "checksum does not match the manifest" in capsys.readouterr().err
    assert sha256_file(shard) != sha256_file(releases["v1"] / shard.relative_to(copy))
