"""A small fake Hugging Face Hub over HTTP on 127.0.0.1, for tests of the real upload / download paths.

It implements the endpoints huggingface_hub 2.x calls for ``create_repo``, ``upload_folder`` /
``create_commit`` (preupload, NDJSON commit with inline base64 files or LFS pointers, the LFS batch API
with basic transfer: PUT then verify), ``model_info`` / ``dataset_info`` / ``repo_info`` (also at a
revision), ``list_repo_tree``, ``get_paths_info``, ``whoami`` and ``hf_hub_download`` /
``HfFileSystem`` reads (``resolve/<revision>/<path>`` with ETag, X-Repo-Commit, X-Linked-Etag,
X-Linked-Size, Content-Length and byte ranges). Clients point ``HF_ENDPOINT`` at :attr:`FakeHub.url`.

Like the Hub: a repo starts with a commit holding ``.gitattributes``; files matching its LFS patterns
(or above 10 MB) are asked for as LFS; a private repo (or a missing one) reads as 401 ``RepoNotFound``
without a valid token and 404 with one; an unknown token is 401 "Invalid credentials in Authorization
header"; writing needs a token of the namespace's owner. Xet storage is not implemented: clients run
with ``HF_HUB_DISABLE_XET=1`` (huggingface_hub then uploads LFS files with the basic LFS transfer, as it
does without ``hf_xet`` installed), and downloads carry no ``X-Xet-Hash``, so they are plain HTTP.

    with FakeHub(tokens={'hf_writer': 'acme'}) as hub:
        env = {'HF_ENDPOINT': hub.url, 'HF_TOKEN': 'hf_writer', 'HF_HUB_DISABLE_XET': '1'}
"""
from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ['FakeHub']

LFS_PATTERNS = ('*.safetensors', '*.bin', '*.pt', '*.pth', '*.pth.tar', '*.parquet', '*.arrow', '*.npy', '*.zip')
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub asks for LFS above 10 MB whatever the name
_PREFIX = {'model': '', 'dataset': 'datasets/', 'space': 'spaces/'}
_API_TYPES = {'models': 'model', 'datasets': 'dataset', 'spaces': 'space'}


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.000Z')


@dataclass
class Blob:
    data: bytes
    lfs: bool

    @property
    def oid(self) -> str:  # a git blob id; an LFS file's blob is its pointer file
        return _git_blob_oid(self.pointer if self.lfs else self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return (f'version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n'
                f'size {len(self.data)}\n').encode()


@dataclass
class Commit:
    oid: str
    files: Dict[str, Blob]
    message: str
    parent: Optional[str]
    date: str = field(default_factory=_now)


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: Dict[str, Commit] = field(default_factory=dict)
    branches: Dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Optional[Commit]:
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)


class HubError(Exception):
    """An HTTP error answer with the Hub's X-Error-Code / X-Error-Message headers."""

    def __init__(self, status: int, message: str, code: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class FakeHub:
    """The Hub's state (repos, commits, LFS objects) and a threaded HTTP server on 127.0.0.1.

    Args:
        tokens: token -> user name; a user may write to repos under its own name.
    """

    def __init__(self, tokens: Optional[Dict[str, str]] = None):
        self.tokens = dict(tokens or {})
        self.repos: Dict[Tuple[str, str], Repo] = {}
        self.lfs_objects: Dict[str, bytes] = {}
        self.log: List[Tuple[str, str, int]] = []  # (method, path, status) of every request
        self.lock = threading.RLock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._commit_count = 0

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, 'start the server first'
        return f'http://127.0.0.1:{self._server.server_address[1]}'

    def start(self) -> 'FakeHub':
        hub = self

        class Handler(_Handler):
            pass
        Handler.hub = hub
        self._server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name='fake-hub', daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> 'FakeHub':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- state helpers for tests ----------------------------------------------------------------

    def files(self, repo_id: str, repo_type: str = 'model', revision: str = 'main') -> Dict[str, bytes]:
        """``{path: content}`` of a repo at a revision (LFS files resolved to their content)."""
        with self.lock:
            commit = self.repos[(repo_type, repo_id)].resolve(revision)
            assert commit is not None, f'{repo_id}: no revision {revision}'
            return {p: b.data for p, b in commit.files.items()}

    def lfs_paths(self, repo_id: str, repo_type: str = 'model', revision: str = 'main') -> List[str]:
        with self.lock:
            commit = self.repos[(repo_type, repo_id)].resolve(revision)
            return sorted(p for p, b in commit.files.items() if b.lfs)

    def requests(self, method: Optional[str] = None, contains: str = '') -> List[Tuple[str, str, int]]:
        return [r for r in self.log if (method is None or r[0] == method) and contains in r[1]]

    # -- repo operations ------------------------------------------------------------------------

    def _new_commit(self, repo: Repo, files: Dict[str, Blob], message: str, parent: Optional[str]) -> Commit:
        self._commit_count += 1
        oid = hashlib.sha1(f'{repo.repo_type}/{repo.repo_id}/{self._commit_count}/{message}'.encode()).hexdigest()
        commit = Commit(oid, files, message, parent)
        repo.commits[oid] = commit
        return commit

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_type, repo_id, private)
        attributes = ''.join(f'{p} filter=lfs diff=lfs merge=lfs -text\n' for p in LFS_PATTERNS).encode()
        commit = self._new_commit(repo, {'.gitattributes': Blob(attributes, False)}, 'initial commit', None)
        repo.branches['main'] = commit.oid
        self.repos[(repo_type, repo_id)] = repo
        return repo


def _is_lfs(path: str, size: int) -> bool:
    name = path.rsplit('/', 1)[-1]
    return size >= LFS_MIN_SIZE or any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS)


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = 'HTTP/1.1'  # keep-alive, as httpx expects; every answer has a Content-Length

    def log_message(self, format, *args):  # noqa: A002 - quiet; requests are in hub.log
        pass

    # -- plumbing -------------------------------------------------------------------------------

    def _body(self) -> bytes:
        """The request body (read once, before any answer: an unread body would be taken for the next request)."""
        if getattr(self, '_read_body', None) is None:
            self._read_body = self._read_request_body()
        return self._read_body

    def _read_request_body(self) -> bytes:
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b';')[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b'\r\n', b'\n', b''):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(length) if length else b''

    def _send(self, status: int, body: bytes = b'', headers: Optional[Dict[str, str]] = None,
              content_type: str = 'application/json') -> None:
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if 'Content-Length' not in (headers or {}):
            self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)
        self.hub.log.append((self.command, self.path, status))

    def _json(self, obj, status: int = 200, headers: Optional[Dict[str, str]] = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _user(self) -> Optional[str]:
        """The token's user; None without a token; an unknown token is refused like the Hub does."""
        auth = self.headers.get('Authorization', '')
        if not auth:
            return None
        token = auth[len('Bearer '):] if auth.startswith('Bearer ') else auth
        user = self.hub.tokens.get(token)
        if user is None:
            raise HubError(401, 'Invalid credentials in Authorization header')
        return user

    def _repo(self, repo_type: str, repo_id: str, write: bool = False) -> Repo:
        user = self._user()
        repo = self.hub.repos.get((repo_type, repo_id))
        owner = repo_id.split('/')[0]
        if repo is None or (repo.private and user != owner):
            raise HubError(404 if user else 401, 'Repository not found', 'RepoNotFound')
        if write and user != owner:
            raise HubError(403 if user else 401, f'You do not have write access to {repo_id}')
        return repo

    @staticmethod
    def _commit(repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f'Invalid rev id: {revision}', 'RevisionNotFound')
        return commit

    def _dispatch(self) -> None:
        self._read_body = None
        self._body()
        try:
            with self.hub.lock:
                self._route()
        except HubError as e:
            headers = {'X-Error-Message': e.message}
            if e.code:
                headers['X-Error-Code'] = e.code
            self._json({'error': e.message}, e.status, headers)
        except Exception as e:  # noqa: BLE001 - a bug here must show up as a 500, not a hung client
            self._json({'error': f'fake hub: {type(e).__name__}: {e}'}, 500)

    do_GET = do_HEAD = do_POST = do_PUT = _dispatch

    # -- routing --------------------------------------------------------------------------------

    def _route(self) -> None:
        split = urlsplit(self.path)
        parts = [unquote(p) for p in split.path.split('/')[1:]]
        query = parse_qs(split.query)
        method = self.command
        if parts[:2] == ['api', 'repos'] and parts[2:] == ['create'] and method == 'POST':
            return self._create_repo()
        if parts[:2] == ['api', 'whoami-v2']:
            user = self._user()
            if user is None:
                raise HubError(401, 'Invalid username or password.')
            return self._json({'type': 'user', 'name': user, 'auth': {'type': 'access_token'}})
        if parts[:2] == ['api', 'validate-yaml'] and method == 'POST':
            return self._validate_yaml()
        if parts[0] == 'api' and len(parts) >= 4 and parts[1] in _API_TYPES:
            return self._api(_API_TYPES[parts[1]], f'{parts[2]}/{parts[3]}', parts[4:], query)
        if parts[0] == '_lfs' and len(parts) >= 2:
            return self._lfs_object(parts[1], parts[2:])
        repo_type = 'model'
        if parts[0] in ('datasets', 'spaces'):
            repo_type, parts = parts[0][:-1], parts[1:]
        if len(parts) >= 2 and parts[1].endswith('.git') and parts[2:] == ['info', 'lfs', 'objects', 'batch']:
            return self._lfs_batch(repo_type, f'{parts[0]}/{parts[1][:-4]}')
        if len(parts) >= 5 and parts[2] == 'resolve':
            return self._resolve(repo_type, f'{parts[0]}/{parts[1]}', parts[3], '/'.join(parts[4:]))
        raise HubError(404, f'fake hub: no route for {method} {split.path}')

    def _api(self, repo_type: str, repo_id: str, rest: List[str], query) -> None:
        method = self.command
        if not rest and method == 'GET':
            return self._info(repo_type, repo_id, 'main')
        if rest[:1] == ['revision'] and len(rest) == 2 and method == 'GET':
            return self._info(repo_type, repo_id, rest[1])
        if rest[:1] == ['tree'] and len(rest) >= 2 and method == 'GET':
            recursive = query.get('recursive', ['false'])[0].lower() in ('1', 'true')
            return self._tree(repo_type, repo_id, rest[1], '/'.join(rest[2:]), recursive)
        if rest[:1] == ['paths-info'] and len(rest) == 2 and method == 'POST':
            return self._paths_info(repo_type, repo_id, rest[1])
        if rest[:1] == ['preupload'] and len(rest) == 2 and method == 'POST':
            return self._preupload(repo_type, repo_id, rest[1])
        if rest[:1] == ['commit'] and len(rest) == 2 and method == 'POST':
            return self._commit_files(repo_type, repo_id, rest[1])
        if rest == ['refs'] and method == 'GET':
            repo = self._repo(repo_type, repo_id)
            return self._json({'branches': [{'name': b, 'ref': f'refs/heads/{b}', 'targetCommit': c}
                                            for b, c in repo.branches.items()], 'tags': [], 'converts': []})
        raise HubError(404, f'fake hub: no route for {method} /api/{repo_type}s/{repo_id}/{"/".join(rest)}')

    # -- endpoints ------------------------------------------------------------------------------

    def _create_repo(self) -> None:
        payload = json.loads(self._body() or b'{}')
        user = self._user()
        if user is None:
            raise HubError(401, 'You must be authenticated to create a repo')
        namespace = payload.get('organization') or user
        if namespace != user:
            raise HubError(403, f'You do not have the rights to create a repo under the namespace "{namespace}"')
        repo_type = payload.get('type') or 'model'
        repo_id = f'{namespace}/{payload["name"]}'
        url = f'{self.hub.url}/{_PREFIX[repo_type]}{repo_id}'
        if (repo_type, repo_id) in self.hub.repos:
            return self._json({'error': f'You already created this {repo_type} repo', 'url': url}, 409,
                              {'X-Error-Message': f'You already created this {repo_type} repo'})
        private = payload.get('visibility') == 'private' or bool(payload.get('private'))
        self.hub.create_repo(repo_type, repo_id, private)
        self._json({'url': url, 'name': repo_id, 'id': repo_id})

    def _validate_yaml(self) -> None:
        """The card's YAML front matter must parse to a mapping; a model-index needs task types and metrics."""
        import yaml
        content = json.loads(self._body()).get('content', '')
        m = re.match(r'^---\s*\n(.*?)\n---\s*(\n|$)', content, re.S)
        if not m:
            return self._json({'errors': [], 'warnings': [{'message': 'empty or missing yaml metadata'}]})
        problems = []
        try:
            meta = yaml.safe_load(m.group(1))
        except yaml.YAMLError as e:
            meta, problems = None, [f'invalid YAML: {str(e).splitlines()[0]}']
        if not problems and not isinstance(meta, dict):
            problems = ['metadata is not a YAML mapping']
        for entry in (meta or {}).get('model-index', []) if not problems else []:
            for result in entry.get('results', []):
                if not result.get('task', {}).get('type'):
                    problems.append('"model-index[0].results[].task.type" is required')
                metrics = result.get('metrics', [])
                if any(not isinstance(x, dict) or 'type' not in x or 'value' not in x for x in metrics):
                    problems.append('"model-index[0].results[].metrics" need type and value')
        if problems:
            return self._json({'errors': [{'message': p} for p in problems]}, 400)
        self._json({'errors': [], 'warnings': []})

    def _info(self, repo_type: str, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_type, repo_id)
        commit = self._commit(repo, revision)
        author = repo_id.split('/')[0]
        info = {
            '_id': hashlib.sha1(repo_id.encode()).hexdigest()[:24], 'id': repo_id, 'author': author,
            'sha': commit.oid, 'private': repo.private, 'gated': False, 'disabled': False,
            'lastModified': commit.date, 'createdAt': repo.commits[repo.branches['main']].date,
            'tags': [], 'downloads': 0, 'likes': 0,
            'siblings': [{'rfilename': p} for p in sorted(commit.files)],
        }
        if repo_type == 'model':
            info['modelId'] = repo_id
        self._json(info)

    def _entry(self, path: str, blob: Optional[Blob]) -> dict:
        if blob is None:
            return {'type': 'directory', 'oid': hashlib.sha1(path.encode()).hexdigest(), 'size': 0, 'path': path}
        entry = {'type': 'file', 'oid': blob.oid, 'size': len(blob.data), 'path': path}
        if blob.lfs:
            entry['lfs'] = {'oid': blob.sha256, 'size': len(blob.data), 'pointerSize': len(blob.pointer)}
        return entry

    @staticmethod
    def _folders(files: Dict[str, Blob]) -> List[str]:
        return sorted({'/'.join(p.split('/')[:i]) for p in files for i in range(1, p.count('/') + 1)})

    def _tree(self, repo_type: str, repo_id: str, revision: str, path: str, recursive: bool) -> None:
        commit = self._commit(self._repo(repo_type, repo_id), revision)
        folders = self._folders(commit.files)
        path = path.strip('/')
        if path and path not in folders:
            raise HubError(404, f'{path} does not exist on "{revision}"', 'EntryNotFound')
        prefix = f'{path}/' if path else ''
        entries = []
        for p in folders + sorted(commit.files):
            if not p.startswith(prefix) or (not recursive and '/' in p[len(prefix):]):
                continue
            entries.append(self._entry(p, commit.files.get(p)))
        self._json(entries)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        commit = self._commit(self._repo(repo_type, repo_id), revision)
        form = parse_qs(self._body().decode())
        folders = set(self._folders(commit.files))
        out = []
        for path in form.get('paths', []):
            path = path.strip('/')
            if path in commit.files or path in folders:
                out.append(self._entry(path, commit.files.get(path)))
        self._json(out)

    def _preupload(self, repo_type: str, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_type, repo_id, write=True)
        commit = self._commit(repo, revision)
        files = json.loads(self._body())['files']
        out = []
        for f in files:
            lfs = _is_lfs(f['path'], int(f['size']))
            remote = commit.files.get(f['path'])
            out.append({'path': f['path'], 'uploadMode': 'lfs' if lfs else 'regular', 'shouldIgnore': False,
                        'oid': remote.oid if remote is not None else None})
        self._json({'files': out, 'commitOid': commit.oid})

    def _commit_files(self, repo_type: str, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_type, repo_id, write=True)
        if revision not in repo.branches:
            raise HubError(404, f'Invalid rev id: {revision}', 'RevisionNotFound')
        head = repo.commits[repo.branches[revision]]
        files = dict(head.files)
        message = ''
        for line in self._body().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item['key'], item['value']
            if key == 'header':
                message = value.get('summary', '')
                parent = value.get('parentCommit')
                if parent and parent != head.oid:
                    raise HubError(412, 'A commit has happened since. Please refresh and try again.')
            elif key == 'file':
                if value.get('encoding') != 'base64':
                    raise HubError(400, f'fake hub: unsupported encoding {value.get("encoding")!r}')
                data = base64.b64decode(value['content'])
                files[value['path']] = Blob(data, False)
            elif key == 'lfsFile':
                data = self.hub.lfs_objects.get(value['oid'])
                if data is None:
                    raise HubError(400, f'LFS file {value["path"]}: object {value["oid"]} was not uploaded')
                files[value['path']] = Blob(data, True)
            elif key == 'deletedFile':
                files.pop(value['path'], None)
            elif key == 'deletedFolder':
                prefix = value['path'].rstrip('/') + '/'
                files = {p: b for p, b in files.items() if not p.startswith(prefix)}
            else:
                raise HubError(400, f'fake hub: unknown commit operation {key!r}')
        commit = self.hub._new_commit(repo, files, message, head.oid)
        repo.branches[revision] = commit.oid
        self._json({'success': True, 'commitOid': commit.oid, 'pullRequestUrl': None,
                    'commitUrl': f'{self.hub.url}/{_PREFIX[repo_type]}{repo_id}/commit/{commit.oid}'})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        self._repo(repo_type, repo_id, write=True)
        payload = json.loads(self._body())
        if payload.get('operation') != 'upload':
            raise HubError(400, 'fake hub: only LFS uploads are implemented')
        objects = []
        for obj in payload['objects']:
            entry = {'oid': obj['oid'], 'size': obj['size']}
            if obj['oid'] not in self.hub.lfs_objects:  # already stored objects need no upload
                href = f'{self.hub.url}/_lfs/{obj["oid"]}'
                entry['actions'] = {'upload': {'href': href}, 'verify': {'href': f'{href}/verify'}}
            objects.append(entry)
        self._json({'transfer': 'basic', 'objects': objects}, headers={'Content-Type': 'application/vnd.git-lfs+json'})

    def _lfs_object(self, oid: str, rest: List[str]) -> None:
        if self.command == 'PUT' and not rest:  # the presigned upload URL: no auth, like S3
            data = self._body()
            if hashlib.sha256(data).hexdigest() != oid:
                raise HubError(400, f'LFS object {oid}: content does not match its sha256')
            self.hub.lfs_objects[oid] = data
            return self._send(200, b'', {'ETag': f'"{hashlib.md5(data).hexdigest()}"'})
        if self.command == 'POST' and rest == ['verify']:
            self._user()
            payload = json.loads(self._body())
            data = self.hub.lfs_objects.get(oid)
            if data is None or len(data) != payload.get('size'):
                raise HubError(422, f'LFS object {oid} was not uploaded')
            return self._json({'success': True})
        raise HubError(404, f'fake hub: no route for {self.command} /_lfs/{oid}')

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        if self.command not in ('GET', 'HEAD'):
            raise HubError(405, f'{self.command} on resolve')
        commit = self._commit(self._repo(repo_type, repo_id), revision)
        blob = commit.files.get(path)
        if blob is None:
            raise HubError(404, f'Entry not found: {path}', 'EntryNotFound')
        headers = {'X-Repo-Commit': commit.oid, 'Accept-Ranges': 'bytes', 'ETag': f'"{blob.oid}"'}
        if blob.lfs:
            headers['ETag'] = headers['X-Linked-Etag'] = f'"{blob.sha256}"'
            headers['X-Linked-Size'] = str(len(blob.data))
        data, status = blob.data, 200
        wanted = self.headers.get('Range')
        if wanted:
            m = re.fullmatch(r'bytes=(\d*)-(\d*)', wanted.strip())
            if not m or (not m.group(1) and not m.group(2)):
                raise HubError(416, f'bad range {wanted}')
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
            else:  # a suffix: the last N bytes
                start, end = max(0, len(data) - int(m.group(2))), len(data) - 1
            if start >= len(data):
                self._send(416, b'', {**headers, 'Content-Range': f'bytes */{len(data)}'})
                return
            data, status = data[start:end + 1], 206
            headers['Content-Range'] = f'bytes {start}-{end}/{len(blob.data)}'
        headers['Content-Length'] = str(len(data))
        self._send(status, data, headers, content_type='application/octet-stream')

