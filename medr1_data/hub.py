"""Versioned Hub pushes: one atomic commit on top of a known parent, checked against the manifest, then a tag."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medr1_data import Medr1Error
from medr1_data.shards import MANIFEST, check_release

VERSION = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
TAG = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
MANAGED = ("data/", "images/")  # remote folders a release owns: files there that the new version lacks are deleted
BRANCH = "main"


def parse_version(text: str, what: str = "version") -> tuple[int, int, int]:
    """`X.Y.Z` as a tuple of ints (no `v`, no pre-release suffix)."""
    match = VERSION.match(str(text).strip())
    if not match:
        raise Medr1Error(f"{what} '{text}' is not X.Y.Z (three numbers, e.g. 1.2.0)")
    return int(match[1]), int(match[2]), int(match[3])


def bump_kind(old: tuple[int, int, int] | None, new: tuple[int, int, int]) -> str:
    """`major`, `minor`, `patch` or `first release`."""
    if old is None:
        return "first release"
    return "major" if new[0] != old[0] else "minor" if new[1] != old[1] else "patch"


def hub_endpoint() -> str | None:
    """The Hub endpoint from `HF_ENDPOINT` at call time (None: huggingface_hub's default)."""
    return os.environ.get("HF_ENDPOINT") or None


@dataclass
class LocalFile:
    """A file of the release folder and where it goes in the repository."""

    path_in_repo: str
    local: Path
    size: int
    sha256: str | None = None


@dataclass
class PushPlan:
    """What a push would do: the release's files, its version and the one it follows (if recorded)."""

    folder: Path
    repo: str
    version: str
    files: list[LocalFile]
    manifest: dict[str, Any]
    previous: str | None


def plan_push(folder: Path, repo: str, version: str) -> PushPlan:
    """Check the release folder (checksums, version) and list what would be uploaded; contacts nothing."""
    folder = Path(folder)
    if not re.match(r"^[\w.-]+/[\w.-]+$", repo):
        raise Medr1Error(f"--repo '{repo}' is not ORG/NAME")
    parse_version(version, "--version")
    manifest = check_release(folder)
    built = str(manifest.get("version", ""))
    if built != version:
        raise Medr1Error(
            f"--version {version} does not match the release's version {built or '(none)'} in {folder / MANIFEST} "
            f"(the recipe's `version`); rebuild with --set version={version}"
        )
    card = folder / "README.md"
    if not card.exists():
        raise Medr1Error(f"{card}: missing; a release needs its dataset card")
    files = [LocalFile("README.md", card, card.stat().st_size), LocalFile(MANIFEST, folder / MANIFEST, 0)]
    files[1].size = files[1].local.stat().st_size
    files += [LocalFile(e["path"], folder / e["path"], e["bytes"], e["sha256"]) for e in manifest["files"]]
    images = folder / "images"
    if images.is_dir():
        for p in sorted(images.rglob("*")):
            if p.is_file():
                files.append(LocalFile(p.relative_to(folder).as_posix(), p, p.stat().st_size))
    previous = (manifest.get("previous") or {}).get("version")
    if previous and parse_version(version) <= parse_version(previous, "previous version in the manifest"):
        raise Medr1Error(f"version {version} is not greater than the previous release {previous} it was diffed against")
    return PushPlan(folder, repo, version, files, manifest, previous)


def describe_plan(plan: PushPlan, token_env: str) -> list[str]:
    """The dry-run report: version bump, operations, then what the real push checks."""
    new = parse_version(plan.version)
    old = parse_version(plan.previous) if plan.previous else None
    if old:
        bump = f"v{plan.previous} -> v{plan.version} ({bump_kind(old, new)} bump; from the manifest's `previous`)"
    else:
        bump = f"v{plan.version} (no previous version recorded here; the latest remote tag is checked at push)"
    width = max(len(f.path_in_repo) for f in plan.files)
    lines = [
        f"dry run: nothing is contacted; would push {plan.folder} to datasets/{plan.repo}",
        f"version: {bump}",
        f"one commit on {BRANCH}, parent = the branch head read at push time:",
    ]
    for f in plan.files:
        digest = f"  sha256 {f.sha256[:16]}…" if f.sha256 else ""
        lines.append(f"  add     {f.path_in_repo.ljust(width)}  {f.size:>14,} bytes{digest}")
    lines.append(f"  delete  remote files under {' and '.join(MANAGED)} that this release does not have")
    lines.append(
        f"then: check the remote file list, sizes and sha256 against {MANIFEST}, and tag v{plan.version} at that commit"
    )
    state = "set" if os.environ.get(token_env) else "NOT SET (the push would fail)"
    lines.append(f"token: from ${token_env} ({state})")
    return lines


def _status(e: Exception) -> int | None:
    response = getattr(e, "response", None)
    return getattr(response, "status_code", None)


def _hub_error(e: Exception, repo: str, what: str) -> Medr1Error:
    status = _status(e)
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    if status in (401, 403):
        return Medr1Error(f"datasets/{repo}: not allowed to {what} with the given token (HTTP {status})")
    return Medr1Error(f"datasets/{repo}: could not {what}: {first}")


def remote_versions(tags: list[str]) -> list[tuple[int, int, int]]:
    """The release versions among a repository's tag names (`vX.Y.Z`), sorted."""
    return sorted(parse_version(t[1:]) for t in tags if TAG.match(t))


def remote_files(api: Any, repo: str, revision: str) -> dict[str, Any]:
    """The files (`RepoFile`, not folders) of the dataset repository at `revision`, by path."""
    from huggingface_hub.hf_api import RepoFile

    tree = api.list_repo_tree(repo, repo_type="dataset", revision=revision, recursive=True)
    return {f.path: f for f in tree if isinstance(f, RepoFile)}


def stale_paths(plan: PushPlan, remote: Iterable[str]) -> list[str]:
    """The remote paths under the managed folders that the release does not have, sorted."""
    ours = {f.path_in_repo for f in plan.files}
    return sorted(p for p in remote if p.startswith(MANAGED) and p not in ours)


def check_remote(api: Any, plan: PushPlan, revision: str) -> None:
    """Raise unless the remote files at `revision` are exactly the release's: paths, sizes and LFS sha256."""
    remote = remote_files(api, plan.repo, revision)
    for f in plan.files:
        r = remote.get(f.path_in_repo)
        if r is None:
            raise Medr1Error(f"datasets/{plan.repo}@{revision[:12]}: {f.path_in_repo} is missing after the push")
        if r.size != f.size:
            raise Medr1Error(
                f"datasets/{plan.repo}@{revision[:12]}: {f.path_in_repo} has {r.size} bytes, the manifest {f.size}"
            )
        if f.sha256 and r.lfs is not None and r.lfs.sha256 != f.sha256:
            raise Medr1Error(f"datasets/{plan.repo}@{revision[:12]}: {f.path_in_repo} sha256 differs from the manifest")
    stale = stale_paths(plan, remote)
    if stale:
        raise Medr1Error(f"datasets/{plan.repo}@{revision[:12]}: {stale[0]} is not part of v{plan.version}")


def push(
    folder: Path,
    repo: str,
    version: str,
    token_env: str = "HF_TOKEN",
    dry_run: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Push a release folder as one commit on `main` (parent = the head read first), verify it, tag `vX.Y.Z`."""
    plan = plan_push(folder, repo, version)
    if dry_run:
        for line in describe_plan(plan, token_env):
            log(line)
        return {"dry_run": True, "version": version, "files": len(plan.files)}
    api = _api(token_env)
    tag = f"v{version}"
    parent = _parent(_refs(api, repo, log), plan, tag, log)
    deletions = _stale_files(api, plan, parent)
    oid = _commit(api, plan, parent, tag, deletions, log)
    log(f"committed {oid[:12]}; checking the remote files against {MANIFEST}")
    _check_and_tag(api, plan, oid, tag)
    log(f"tagged {tag} at {oid[:12]}: load_dataset('{repo}', revision='{tag}')")
    return {"dry_run": False, "version": version, "commit": oid, "tag": tag, "deleted": deletions}


def _api(token_env: str) -> Any:
    """An `HfApi` on the configured endpoint with the token from `$token_env` (raise if it is not set)."""
    token = os.environ.get(token_env)
    if not token:
        raise Medr1Error(f"${token_env} is not set: put a Hub token with write access in it (or use --token-env VAR)")
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint(), token=token)


def _refs(api: Any, repo: str, log: Callable[[str], None]) -> Any:
    """The dataset repository's branches and tags, creating the repository if it does not exist."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    try:
        try:
            return api.list_repo_refs(repo, repo_type="dataset")
        except RepositoryNotFoundError:
            log(f"datasets/{repo} does not exist: creating it")
            api.create_repo(repo, repo_type="dataset")
            return api.list_repo_refs(repo, repo_type="dataset")
    except OfflineModeIsEnabled:
        raise Medr1Error("HF_HUB_OFFLINE is set: unset it to push") from None
    except HfHubHTTPError as e:
        raise _hub_error(e, repo, "read the repository's branches and tags") from None
    except (httpx2.HTTPError, OSError) as e:
        raise Medr1Error(f"cannot reach the Hub at {api.endpoint}: {type(e).__name__}: {e}") from None


def _parent(refs: Any, plan: PushPlan, tag: str, log: Callable[[str], None]) -> str:
    """The head of `main` to commit on, after checking that `tag` is new and greater than every remote release."""
    repo, version = plan.repo, plan.version
    tags = [t.name for t in refs.tags]
    if tag in tags:
        raise Medr1Error(f"datasets/{repo} already has the tag {tag}: a published version is never replaced")
    versions = remote_versions(tags)
    if versions and parse_version(version) <= versions[-1]:
        latest = ".".join(map(str, versions[-1]))
        raise Medr1Error(f"version {version} is not greater than the latest release v{latest} of datasets/{repo}")
    heads = {b.name: b.target_commit for b in refs.branches}
    if BRANCH not in heads:
        raise Medr1Error(f"datasets/{repo} has no '{BRANCH}' branch")
    parent = heads[BRANCH]
    latest_text = "v" + ".".join(map(str, versions[-1])) if versions else "none"
    log(f"datasets/{repo}: {BRANCH} at {parent[:12]}, latest release {latest_text} -> {tag}")
    return parent


def _stale_files(api: Any, plan: PushPlan, parent: str) -> list[str]:
    """Remote files at `parent` under the managed folders that the release does not have (to delete)."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        remote = remote_files(api, plan.repo, parent)
    except HfHubHTTPError as e:
        raise _hub_error(e, plan.repo, f"list the files at {parent[:12]}") from None
    return stale_paths(plan, remote)


def _commit(api: Any, plan: PushPlan, parent: str, tag: str, deletions: list[str], log: Callable[[str], None]) -> str:
    """One commit on `main` with `parent` as its parent: every release file added, `deletions` deleted; its oid."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.errors import HfHubHTTPError

    repo = plan.repo
    operations: list[Any] = [CommitOperationAdd(f.path_in_repo, str(f.local)) for f in plan.files]
    operations += [CommitOperationDelete(p) for p in deletions]
    log(f"one commit: {len(plan.files)} file(s) added or replaced, {len(deletions)} deleted")
    try:
        commit = api.create_commit(
            repo,
            operations,
            commit_message=f"Release {tag}",
            commit_description=f"MedR1 release {tag}: {plan.manifest.get('splits')} (recipe sha256 "
            f"{plan.manifest.get('recipe_sha256', '')[:16]})",
            repo_type="dataset",
            revision=BRANCH,
            parent_commit=parent,
        )
    except HfHubHTTPError as e:
        if _status(e) == 412:
            raise Medr1Error(
                f"datasets/{repo}: {BRANCH} moved while pushing (it is no longer at {parent[:12]}); nothing was "
                f"committed; check what was pushed meanwhile, then run the push again"
            ) from None
        raise Medr1Error(
            f"{_hub_error(e, repo, 'commit')}; nothing was committed: {BRANCH} is still at {parent[:12]}"
        ) from None
    except (OSError, RuntimeError, ValueError) as e:
        raise Medr1Error(
            f"datasets/{repo}: upload failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            f"nothing was committed: {BRANCH} is still at {parent[:12]}; run the push again"
        ) from None
    return commit.oid


def _check_and_tag(api: Any, plan: PushPlan, oid: str, tag: str) -> None:
    """Check the remote files at commit `oid` against the manifest, then tag it."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        check_remote(api, plan, oid)
        api.create_tag(plan.repo, tag=tag, revision=oid, repo_type="dataset", tag_message=f"MedR1 release {tag}")
    except HfHubHTTPError as e:
        raise Medr1Error(
            f"{_hub_error(e, plan.repo, f'tag {tag}')} (commit {oid[:12]} is on {BRANCH} untagged; run the push again)"
        ) from None
