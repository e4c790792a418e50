"""A tiny in-process fake of the Hugging Face Hub HTTP API, for offline tests.

It speaks just enough of the API for `huggingface_hub` (2.4) to run
`create_repo`, `create_branch`, `upload_folder` / `create_commit` (regular files
inline, large/binary files through the classic git-LFS batch API), `repo_info`
and `whoami` against it. Stdlib only; listens on 127.0.0.1 only.

Usage::

    with FakeHub() as hub:
        api = HfApi(endpoint=hub.url, token=hub.token)
        api.create_repo("user/tiny-adapter")
        ...
        assert hub.repos["user/tiny-adapter"]["branches"]["main"]["README.md"] == b"..."

Xet: when `hf_xet` is installed, huggingface_hub uploads every non-"regular"
file through Xet storage, whatever this server answers (the choice is made
client-side). The server cannot stand in for a Xet CAS, so the client must run
with Xet disabled (`huggingface_hub.constants.HF_HUB_DISABLE_XET = True`, which
the `fake_hub` fixture in conftest.py does). If a client still asks for a Xet
token, the server refuses with a 501 that says so.

Repo keys follow the URL form: "user/name" for models, "datasets/user/name" and
"spaces/user/name" for the other repo types.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

# Files the fake answers "lfs" for in /preupload (on the real Hub: .gitattributes patterns, size, binary sniffing).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".gguf", ".zip", ".npz")
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
MAX_BODY_BYTES = 256 * 1024 * 1024  # refuse anything bigger (keeps a runaway test from eating memory)
SOCKET_TIMEOUT_S = 10  # a stalled client connection is dropped after this long

_TYPE_PREFIX = {"models": "", "datasets": "datasets/", "spaces": "spaces/"}
_REPO = r"(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
_GIT_REPO = r"(?P<prefix>(?:datasets/|spaces/)?)(?P<repo>[^/]+/[^/]+)\.git"


class HubError(Exception):
    """Raised by an endpoint method to answer an HTTP error (with the Hub's X-Error-Code header if given)."""

    def __init__(self, status: int, message: str, error_code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code = status, message, error_code


def git_blob_sha1(data: bytes) -> str:
    """The oid git (and the Hub's /preupload) gives a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _title(header: str) -> str:
    """Canonical header spelling ("authorization" -> "Authorization"): the client sends some in lower case."""
    return "-".join(part.capitalize() for part in header.split("-"))


class FakeHub:
    """The fake Hub: state, plus a ThreadingHTTPServer serving it from a daemon thread."""

    def __init__(self, token: str = "hf_test_token", user: str = "user"):
        self.token = token
        self.user = user
        self.url: str = ""  # "http://127.0.0.1:<port>", set by start()
        # What the server received / holds. Guarded by self.lock.
        self.repos: dict[str, dict] = {}  # repo key -> {"private": bool, "branches": {branch: {path: bytes}}}
        self.commits: list[dict] = []  # {"repo_id", "revision", "message", "description", "paths", "deleted", "oid"}
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path+query, {Title-Cased name: value})
        self.lfs_objects: dict[str, bytes] = {}  # sha256 hex -> content, filled by the LFS PUT
        self.heads: dict[tuple[str, str], str] = {}  # (repo key, branch) -> commit oid
        # Make the commit endpoint answer this HTTP status (e.g. 500) instead of committing.
        self.fail_with: int | None = None
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> "FakeHub":
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.hub = self  # type: ignore[attr-defined]  # how the handler finds the state
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()  # returns once serve_forever has left its loop (<= poll_interval)
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers for tests ---------------------------------------------------------------------------------------

    def files(self, repo_id: str, branch: str = "main") -> dict[str, bytes]:
        """Current content of a branch: {path: bytes}."""
        return self.repos[repo_id]["branches"][branch]

    def requests_to(self, method: str, path_pattern: str) -> list[tuple[str, str, dict[str, str]]]:
        """Recorded requests with this method whose path matches the regex (re.search)."""
        return [r for r in self.requests if r[0] == method and re.search(path_pattern, r[1])]

    # -- state changes (called by the handler, under self.lock) --------------------------------------------------

    def _new_oid(self, *parts: str) -> str:
        return hashlib.sha1("\0".join((*parts, str(len(self.commits)))).encode()).hexdigest()

    def _repo(self, key: str) -> dict:
        if key not in self.repos:
            raise HubError(404, f"Repository not found: {key}", "RepoNotFound")
        return self.repos[key]

    def _branch(self, key: str, revision: str) -> dict[str, bytes]:
        branches = self._repo(key)["branches"]
        if revision not in branches:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return branches[revision]


class _Handler(BaseHTTPRequestHandler):
    """One method per endpoint; ROUTES maps (HTTP method, path regex) to it."""

    server_version = "FakeHub/1.0"
    timeout = SOCKET_TIMEOUT_S  # bounds every read on the client socket
    # HTTP/1.0 (the BaseHTTPRequestHandler default): one request per connection, so no idle
    # keep-alive threads are left behind when the server shuts down.

    @property
    def hub(self) -> FakeHub:
        return self.server.hub  # type: ignore[attr-defined]

    # -- plumbing ------------------------------------------------------------------------------------------------

    def log_message(self, format, *args):  # keep test output clean
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        with self.hub.lock:
            self.hub.requests.append((method, self.path, {_title(k): v for k, v in self.headers.items()}))
        parts = urlsplit(self.path)
        self.query = parse_qs(parts.query)
        try:
            # Always read the whole body first: answering early and closing the socket on unread
            # data can reset the connection, which the client would retry as a network error.
            body = self._read_body()
            for route_method, pattern, name, needs_auth in ROUTES:
                match = re.fullmatch(pattern, parts.path)
                if route_method == method and match:
                    if needs_auth:
                        self._check_auth()
                    params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    with self.hub.lock:
                        status, payload = getattr(self, name)(body, **params)
                    self._reply(status, payload)
                    return
            raise HubError(404, f"FakeHub has no route for {method} {parts.path}")
        except HubError as err:
            self._reply_error(err)
        except Exception as exc:
            # A request the fake does not understand. Answer 400, not 500: the client retries 5xx
            # with backoff (~30 s), and a test should fail fast with this message instead.
            self._reply_error(HubError(400, f"FakeHub could not handle {method} {parts.path}: {exc!r}"))

    def _reply_error(self, err: HubError) -> None:
        headers = {"X-Error-Message": " ".join(err.message.split()).encode("ascii", "replace").decode()[:500]}
        if err.error_code:
            headers["X-Error-Code"] = err.error_code
        self._reply(err.status, {"error": err.message}, headers)

    def _check_auth(self) -> None:
        auth = self.headers.get("Authorization")
        if auth is None:
            raise HubError(401, "Authorization header is required")
        if auth != f"Bearer {self.hub.token}":
            raise HubError(401, "Invalid credentials in Authorization header")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while True:  # ends at the 0-size chunk; each pass consumes input, and reads time out
                size = int(self.rfile.readline(100).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline(100)  # trailing CRLF
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    raise HubError(413, "Body too large for FakeHub")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(100)  # CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise HubError(413, "Body too large for FakeHub")
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, payload, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    @staticmethod
    def _json(body: bytes) -> dict:
        try:
            return json.loads(body or b"{}")
        except ValueError:
            raise HubError(400, "Body is not valid JSON")

    def _repo_url(self, key: str) -> str:
        return f"{self.hub.url}/{key}"

    # -- endpoints (all run under hub.lock) ----------------------------------------------------------------------

    def whoami(self, body):
        # HfApi.whoami -> GET /api/whoami-v2
        return 200, {
            "type": "user",
            "name": self.hub.user,
            "fullname": "Fake Hub User",
            "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
        }

    def validate_yaml(self, body):
        # upload_folder / create_commit validate README.md metadata -> POST /api/validate-yaml
        return 200, {"errors": [], "warnings": []}

    def create_repo(self, body):
        # HfApi.create_repo -> POST /api/repos/create {"name", "organization", "visibility"?, "type"?}
        payload = self._json(body)
        repo_id = f"{payload.get('organization') or self.hub.user}/{payload['name']}"
        key = _TYPE_PREFIX[(payload.get("type") or "model") + "s"] + repo_id
        url = self._repo_url(key)
        if key in self.hub.repos:
            # create_repo(exist_ok=True) swallows this 409 and reads "url" from it.
            return 409, {"error": "You already created this repo", "url": url}
        self.hub.repos[key] = {"private": payload.get("visibility") == "private", "branches": {"main": {}}}
        self.hub.heads[(key, "main")] = self.hub._new_oid(key, "initial")
        return 200, {"url": url, "name": repo_id}

    def repo_info(self, body, type, repo, revision="main"):
        # HfApi.repo_info / model_info -> GET /api/{type}/{repo_id}[/revision/{rev}]
        key = _TYPE_PREFIX[type] + repo
        files = self.hub._branch(key, revision)
        return 200, {
            "id": repo,
            "private": self.hub.repos[key]["private"],
            "sha": self.hub.heads[(key, revision)],
            "siblings": [{"rfilename": path, "size": len(data)} for path, data in sorted(files.items())],
        }

    def create_branch(self, body, type, repo, branch):
        # HfApi.create_branch -> POST /api/{type}/{repo_id}/branch/{branch} {"startingPoint"?}
        key = _TYPE_PREFIX[type] + repo
        branches = self.hub._repo(key)["branches"]
        if branch in branches:
            raise HubError(409, f"Reference already exists: {branch}")
        start = self._json(body).get("startingPoint") or "main"
        branches[branch] = dict(self.hub._branch(key, start))
        self.hub.heads[(key, branch)] = self.hub.heads[(key, start)]
        return 200, {}

    def preupload(self, body, type, repo, revision):
        # create_commit / upload_folder ask how to send each file -> POST /api/{type}/{repo_id}/preupload/{rev}
        # {"files": [{"path", "sample" (base64 of the first 512 bytes), "size"}]}
        key = _TYPE_PREFIX[type] + repo
        existing = self.hub._branch(key, revision)
        answers = []
        for item in self._json(body)["files"]:
            path, size = item["path"], item["size"]
            sample = base64.b64decode(item.get("sample", ""))
            is_lfs = path.endswith(LFS_SUFFIXES) or size > LFS_SIZE_THRESHOLD or b"\0" in sample
            # "oid" of the file already there lets the client skip unchanged files (sha256 for LFS, git sha1 else)
            old = existing.get(path)
            oid = None if old is None else hashlib.sha256(old).hexdigest() if is_lfs else git_blob_sha1(old)
            answers.append({"path": path, "uploadMode": "lfs" if is_lfs else "regular", "shouldIgnore": False,
                            "oid": oid})
        return 200, {"files": answers, "commitOid": self.hub.heads[(key, revision)]}

    def lfs_batch(self, body, prefix, repo):
        # LFS files, step 1 -> POST /{repo_id}.git/info/lfs/objects/batch {"operation": "upload", "objects": [...]}
        # Objects we already hold get no "actions" (the client skips them). No "xet" transfer is offered.
        key = prefix + repo
        self.hub._repo(key)
        objects = []
        for obj in self._json(body)["objects"]:
            oid, size = obj["oid"], obj["size"]
            if oid in self.hub.lfs_objects:
                objects.append({"oid": oid, "size": size})
                continue
            actions = {
                "upload": {"href": f"{self.hub.url}/lfs-storage/{oid}"},
                "verify": {"href": f"{self.hub.url}/{key}.git/info/lfs/objects/verify"},
            }
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": actions})
        return 200, {"transfer": "basic", "objects": objects}

    def lfs_put(self, body, oid):
        # LFS files, step 2 -> PUT {upload href} with the raw bytes (the "pre-signed storage URL": no auth header)
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match oid {oid}")
        self.hub.lfs_objects[oid] = body
        return 200, {}

    def lfs_verify(self, body, prefix, repo):
        # LFS files, step 3 -> POST {verify href} {"oid", "size"}
        obj = self._json(body)
        data = self.hub.lfs_objects.get(obj.get("oid"))
        if data is None or len(data) != obj.get("size"):
            raise HubError(404, f"LFS object {obj.get('oid')} not found or wrong size")
        return 200, {"success": True}

    def commit(self, body, type, repo, revision):
        # create_commit / upload_folder, last step -> POST /api/{type}/{repo_id}/commit/{rev}[?create_pr=1]
        # ndjson: a "header" line {"summary", "description"}, then "file" (base64), "lfsFile" (oid), "deletedFile", ...
        if self.hub.fail_with is not None:
            raise HubError(self.hub.fail_with, f"FakeHub: commit endpoint set to fail with {self.hub.fail_with}")
        key = _TYPE_PREFIX[type] + repo
        files = dict(self.hub._branch(key, revision))
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        paths, deleted = [], []
        for line in lines:
            kind, value = line["key"], line["value"]
            if kind == "file":
                files[value["path"]] = base64.b64decode(value["content"])
                paths.append(value["path"])
            elif kind == "lfsFile":
                if value["oid"] not in self.hub.lfs_objects:
                    raise HubError(422, f"LFS file {value['path']} was not uploaded (oid {value['oid']})")
                files[value["path"]] = self.hub.lfs_objects[value["oid"]]
                paths.append(value["path"])
            elif kind == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                deleted.append(value["path"])
            elif kind == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                deleted += [p for p in files if p.startswith(folder)]
                files = {p: d for p, d in files.items() if not p.startswith(folder)}
            elif kind != "header":
                raise HubError(400, f"FakeHub does not support commit operation {kind!r}")

        pr_url, target = None, revision
        if self.query.get("create_pr") == ["1"]:  # upload_folder(create_pr=True) without hf_xet
            num = 1 + sum(b.startswith("refs/pr/") for b in self.hub.repos[key]["branches"])
            target, pr_url = f"refs/pr/{num}", f"{self._repo_url(key)}/discussions/{num}"
        oid = self.hub._new_oid(key, target)
        self.hub.repos[key]["branches"][target] = files
        self.hub.heads[(key, target)] = oid
        self.hub.commits.append(
            {
                "repo_id": key,
                "revision": target,
                "message": header.get("summary", ""),
                "description": header.get("description", ""),
                "paths": paths,
                "deleted": deleted,
                "oid": oid,
            }
        )
        return 200, {"commitUrl": f"{self._repo_url(key)}/commit/{oid}", "commitOid": oid, "pullRequestUrl": pr_url}

    def xet_token(self, body, type, repo):
        # Only reached when the client runs with hf_xet enabled -> GET /api/{type}/{repo_id}/xet-write-token/{rev}
        raise HubError(501, "FakeHub does not implement Xet storage; disable it (constants.HF_HUB_DISABLE_XET = True)")


# (HTTP method, path regex, handler method, needs "Authorization: Bearer <token>")
ROUTES = [
    ("GET", r"/api/whoami-v2", "whoami", True),
    ("POST", r"/api/validate-yaml", "validate_yaml", True),
    ("POST", r"/api/repos/create", "create_repo", True),
    ("GET", rf"/api/{_REPO}(?:/revision/(?P<revision>[^/]+))?", "repo_info", True),
    ("POST", rf"/api/{_REPO}/branch/(?P<branch>[^/]+)", "create_branch", True),
    ("POST", rf"/api/{_REPO}/preupload/(?P<revision>[^/]+)", "preupload", True),
    ("POST", rf"/api/{_REPO}/commit/(?P<revision>[^/]+)", "commit", True),
    ("GET", rf"/api/{_REPO}/xet-(?:read|write)-token(?:/.*)?", "xet_token", False),
    ("POST", rf"/api/{_REPO}/xet-(?:read|write)-token(?:/.*)?", "xet_token", False),
    ("POST", rf"/{_GIT_REPO}/info/lfs/objects/batch", "lfs_batch", True),
    ("POST", rf"/{_GIT_REPO}/info/lfs/objects/verify", "lfs_verify", True),
    ("PUT", r"/lfs-storage/(?P<oid>[0-9a-f]{64})", "lfs_put", False),
]
