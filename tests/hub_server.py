"""A local stand-in for the Hub API on 127.0.0.1: dataset repos with commits, branches, tags and LFS objects.

It implements what `huggingface_hub` uses to push and read a release, with the Hub's semantics where they matter:
a commit is applied all at once or not at all, `parentCommit` must be the branch head (else HTTP 412), an existing
tag cannot be created again (409), LFS objects must be uploaded (and match their sha256) before a commit names them.
Test hooks: `hold_uploads` blocks every LFS upload until the event is set (an upload that never ends: the client is
killed meanwhile); `move_branch_on_preupload` lets someone else commit to `main` between the client's read of the
head and its commit; `fail_next_tag` answers the next tag request with HTTP 503.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
REV = r"(?P<rev>[^/]+)"


@dataclass
class Blob:
    """A file in a commit: regular content, or an LFS pointer to an uploaded object."""

    size: int
    git_oid: str
    content: bytes | None = None
    sha256: str | None = None


@dataclass
class Repo:
    """A dataset repository: commits by oid, branch heads and tags."""

    commits: dict[str, dict[str, Blob]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class HubStandIn:
    """The server; use as a context manager (starts on a free port of 127.0.0.1, stops on exit)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []
        self.hold_uploads: threading.Event | None = None
        self.upload_started = threading.Event()
        self.move_branch_on_preupload = False
        self.fail_next_tag = False
        self._counter = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:12345."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> HubStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.hold_uploads is not None:
            self.hold_uploads.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- state helpers used by the handler and by tests

    def new_oid(self, *parts: str) -> str:
        """A fresh 40-hex commit id."""
        self._counter += 1
        return hashlib.sha1("\0".join([str(self._counter), *parts]).encode()).hexdigest()

    def create_repo(self, repo_id: str) -> Repo:
        """A repo with the Hub's initial commit (a `.gitattributes`)."""
        repo = Repo()
        content = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"
        oid = self.new_oid(repo_id, "initial")
        repo.commits[oid] = {".gitattributes": _regular(content)}
        repo.branches["main"] = oid
        self.repos[repo_id] = repo
        return repo

    def files(self, repo_id: str, rev: str = "main") -> dict[str, Blob]:
        """The files of a repo at a branch, tag or commit."""
        repo = self.repos[repo_id]
        return repo.commits[repo.branches.get(rev) or repo.tags.get(rev) or rev]

    def someone_else_commits(self, repo_id: str) -> str:
        """Another client's commit on main (adds a file), as if pushed concurrently."""
        repo = self.repos[repo_id]
        files = dict(repo.commits[repo.branches["main"]])
        files["NOTES.md"] = _regular(b"edited by someone else\n")
        oid = self.new_oid(repo_id, "someone else")
        repo.commits[oid] = files
        repo.branches["main"] = oid
        return oid


def _regular(content: bytes) -> Blob:
    git_oid = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
    return Blob(size=len(content), git_oid=git_oid, content=content)


def _handler(hub: HubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        # ---- plumbing

        def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
            data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            ctype = "application/octet-stream" if isinstance(body, bytes) else "application/json"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _error(self, status: int, message: str, code: str | None = None) -> None:
            headers = {"X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            self._send(status, {"error": message}, headers)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {hub.token}":
                return True
            self._error(401, "Invalid credentials in Authorization header")
            return False

        def _repo(self, repo_id: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "Repository not found", "RepoNotFound")
            return repo

        def _commit_of(self, repo: Repo, rev: str) -> str | None:
            rev = unquote(rev)
            oid = repo.branches.get(rev) or repo.tags.get(rev) or (rev if rev in repo.commits else None)
            if oid is None:
                self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return oid

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            path, query = url.path, parse_qs(url.query)
            with hub.lock:
                hub.requests.append((method, path))
            for verb, pattern, fn in ROUTES:
                match = re.fullmatch(pattern, path)
                if verb == method and match:
                    fn(self, query=query, **match.groupdict())
                    return
            self._error(404, f"no stand-in route for {method} {path}")

        def do_GET(self) -> None:
            self._route("GET")

        def do_HEAD(self) -> None:
            self._route("HEAD")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

        # ---- endpoints

        def create(self, query: dict) -> None:
            body = json.loads(self._body() or b"{}")
            if not self._authorized():
                return
            repo_id = f"{body.get('organization')}/{body['name']}"
            with hub.lock:
                if repo_id in hub.repos:
                    self._error(409, "You already created this dataset repo")
                    return
                hub.create_repo(repo_id)
            self._send(200, {"url": f"{hub.url}/datasets/{repo_id}", "name": repo_id})

        def refs(self, query: dict, repo: str) -> None:
            with hub.lock:
                r = self._repo(repo)
                if r is None:
                    return

                def ref(name: str, oid: str, kind: str) -> dict[str, str]:
                    return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}

                self._send(
                    200,
                    {
                        "branches": [ref(n, o, "heads") for n, o in r.branches.items()],
                        "tags": [ref(n, o, "tags") for n, o in r.tags.items()],
                        "converts": [],
                    },
                )

        def tree(self, query: dict, repo: str, rev: str, sub: str | None = None) -> None:
            with hub.lock:
                r = self._repo(repo)
                oid = r and self._commit_of(r, rev)
                if not oid:
                    return
                prefix = unquote(sub or "").strip("/")
                entries = []
                for p, blob in sorted(r.commits[oid].items()):
                    if prefix and not p.startswith(prefix + "/"):
                        continue
                    entry: dict[str, Any] = {"type": "file", "path": p, "size": blob.size, "oid": blob.git_oid}
                    if blob.sha256:
                        entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": 134}
                    entries.append(entry)
            self._send(200, entries)

        def revision(self, query: dict, repo: str, rev: str) -> None:
            with hub.lock:
                r = self._repo(repo)
                oid = r and self._commit_of(r, rev)
                if not oid:
                    return
                siblings = [{"rfilename": p, "size": b.size} for p, b in sorted(r.commits[oid].items())]
            self._send(200, {"id": repo, "_id": repo, "sha": oid, "private": False, "siblings": siblings})

        def validate_yaml(self, query: dict) -> None:
            self._body()
            self._send(200, {"errors": [], "warnings": []})

        def preupload(self, query: dict, repo: str, rev: str) -> None:
            body = json.loads(self._body())
            if not self._authorized():
                return
            with hub.lock:
                r = self._repo(repo)
                oid = r and self._commit_of(r, rev)
                if not oid:
                    return
                if hub.move_branch_on_preupload:
                    hub.move_branch_on_preupload = False
                    hub.someone_else_commits(repo)
                current = r.commits[oid]
            files = []
            for f in body["files"]:
                lfs = f["path"].endswith(".parquet") or f["size"] > 10_000_000
                remote = current.get(f["path"])
                files.append(
                    {
                        "path": f["path"],
                        "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False,
                        # The Hub answers the file's current oid: sha256 for LFS files, the git sha1 otherwise.
                        "oid": (remote.sha256 if lfs else remote.git_oid) if remote else None,
                    }
                )
            self._send(200, {"files": files})

        def lfs_batch(self, query: dict, repo: str) -> None:
            body = json.loads(self._body())
            if not self._authorized():
                return
            objects = []
            for obj in body["objects"]:
                item: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
                with hub.lock:
                    present = obj["oid"] in hub.lfs
                if not present:
                    item["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{obj['oid']}"}}
                objects.append(item)
            self._send(200, {"transfer": "basic", "objects": objects})

        def lfs_upload(self, query: dict, oid: str) -> None:
            hub.upload_started.set()
            if hub.hold_uploads is not None:
                hub.hold_uploads.wait()
            data = self._body()
            if hashlib.sha256(data).hexdigest() != oid:
                self._error(400, "uploaded content does not match its oid")
                return
            with hub.lock:
                hub.lfs[oid] = data
            self._send(200, {})

        def commit(self, query: dict, repo: str, rev: str) -> None:
            lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
            if not self._authorized():
                return
            with hub.lock:
                r = self._repo(repo)
                if r is None:
                    return
                branch = unquote(rev)
                if branch not in r.branches:
                    self._error(404, f"Invalid rev id: {branch}", "RevisionNotFound")
                    return
                head = r.branches[branch]
                header = next((x["value"] for x in lines if x["key"] == "header"), {})
                parent = header.get("parentCommit")
                if parent and parent != head:
                    self._error(412, "A commit has happened since. Please refresh and try again.")
                    return
                files = dict(r.commits[head])
                for item in lines:
                    key, value = item["key"], item["value"]
                    if key == "file":
                        files[value["path"]] = _regular(base64.b64decode(value["content"]))
                    elif key == "lfsFile":
                        data = hub.lfs.get(value["oid"])
                        if data is None or len(data) != value["size"]:
                            self._error(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                            return
                        pointer = f"oid sha256:{value['oid']}\nsize {value['size']}\n".encode()
                        files[value["path"]] = Blob(
                            value["size"], hashlib.sha1(pointer).hexdigest(), sha256=value["oid"]
                        )
                    elif key in ("deletedFile", "deletedFolder"):
                        gone = [p for p in files if p == value["path"] or p.startswith(value["path"].rstrip("/") + "/")]
                        if not gone:
                            self._error(404, "A file with this name doesn't exist", "EntryNotFound")
                            return
                        for p in gone:
                            del files[p]
                oid = hub.new_oid(repo, head, header.get("summary", ""))
                r.commits[oid] = files
                r.branches[branch] = oid
            self._send(
                200, {"commitUrl": f"{hub.url}/datasets/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}
            )

        def tag(self, query: dict, repo: str, rev: str) -> None:
            body = json.loads(self._body())
            if not self._authorized():
                return
            if hub.fail_next_tag:
                hub.fail_next_tag = False
                self._error(503, "Service temporarily unavailable")
                return
            with hub.lock:
                r = self._repo(repo)
                oid = r and self._commit_of(r, rev)
                if not oid:
                    return
                if body["tag"] in r.tags:
                    self._error(409, f"Tag {body['tag']} already exists")
                    return
                r.tags[body["tag"]] = oid
            self._send(200, {})

        def resolve(self, query: dict, repo: str, rev: str, file: str) -> None:
            with hub.lock:
                r = self._repo(repo)
                oid = r and self._commit_of(r, rev)
                if not oid:
                    return
                blob = r.commits[oid].get(unquote(file))
                if blob is None:
                    self._error(404, "Entry not found", "EntryNotFound")
                    return
                data = blob.content if blob.sha256 is None else hub.lfs[blob.sha256]
            headers = {"X-Repo-Commit": oid, "ETag": f'"{blob.git_oid}"'}
            if blob.sha256:
                headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(blob.size)})
            self._send(200, data, headers)

    ROUTES = [
        ("POST", r"/api/repos/create", Handler.create),
        ("GET", rf"/api/datasets/{REPO}/refs", Handler.refs),
        ("GET", rf"/api/datasets/{REPO}/tree/{REV}(?:/(?P<sub>.+))?", Handler.tree),
        ("GET", rf"/api/datasets/{REPO}/revision/{REV}", Handler.revision),
        ("POST", r"/api/validate-yaml", Handler.validate_yaml),
        ("POST", rf"/api/datasets/{REPO}/preupload/{REV}", Handler.preupload),
        ("POST", rf"/datasets/{REPO}\.git/info/lfs/objects/batch", Handler.lfs_batch),
        ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", Handler.lfs_upload),
        ("POST", rf"/api/datasets/{REPO}/commit/{REV}", Handler.commit),
        ("POST", rf"/api/datasets/{REPO}/tag/{REV}", Handler.tag),
        ("GET", rf"/datasets/{REPO}/resolve/{REV}/(?P<file>.+)", Handler.resolve),
        ("HEAD", rf"/datasets/{REPO}/resolve/{REV}/(?P<file>.+)", Handler.resolve),
    ]
    return Handler
