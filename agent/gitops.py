"""Commit candidates' train.py on `autoresearch/<TAG>` without touching the user's checkout.

Everything goes through git plumbing: the blob is written with `hash-object -w`, the tree is
built in a *temporary* index (GIT_INDEX_FILE) seeded from the parent commit's tree, the commit
is made with `commit-tree`, and refs move with `update-ref`. The user's branch, HEAD, index
and working tree are never read-modified-written, so uncommitted work is safe.

Layout of what a run leaves in the repository:
    refs/heads/autoresearch/<TAG>          the incumbent lineage: baseline, then each new incumbent
    refs/autoresearch/<TAG>/<candidate>    every executed candidate (keeps discarded ones reachable,
                                           so results.tsv's `commit` column always resolves)
    refs/tags/<TAG>/gen-NNN-best           the incumbent after generation NNN
A candidate's commit has the incumbent's commit as parent, so promoting it is a fast-forward.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Used only when the repository has no identity configured (commit-tree refuses to run then).
FALLBACK_IDENTITY = {"GIT_AUTHOR_NAME": "autoresearch", "GIT_AUTHOR_EMAIL": "autoresearch@localhost",
                     "GIT_COMMITTER_NAME": "autoresearch", "GIT_COMMITTER_EMAIL": "autoresearch@localhost"}
_TAG_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class GitError(RuntimeError):
    """A git command failed; the message carries the command and git's own words."""


def _git(repo: Path, *args: str, input: bytes | None = None, env: dict | None = None,
         check: bool = True) -> str:
    full_env = {**os.environ, **(env or {})}
    # a stray GIT_DIR / GIT_INDEX_FILE from the caller's shell must not redirect our plumbing
    for var in ("GIT_DIR", "GIT_WORK_TREE"):
        full_env.pop(var, None)
    if not env or "GIT_INDEX_FILE" not in env:
        full_env.pop("GIT_INDEX_FILE", None)
    proc = subprocess.run(["git", *args], cwd=repo, input=input, env=full_env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if check and proc.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode(errors="replace").strip() if proc.returncode == 0 else ""


def validate_tag(tag: str) -> str:
    """A run tag becomes part of branch, ref and tag names: keep it to safe characters."""
    if not _TAG_OK.match(tag) or tag.endswith((".lock", ".")) or ".." in tag:
        raise ValueError(f"run tag {tag!r} is not usable: use letters, digits, '.', '_' or '-', "
                         f"starting with a letter or digit")
    return tag


@dataclass
class RunRepo:
    """The git side of one run. Build it with `RunRepo.find(project_dir, tag)`; None = not a repo."""

    root: Path            # repository top level
    prefix: str           # project_dir relative to root ("" or "sub/dir/")
    tag: str
    _identity: dict | None = None

    @classmethod
    def find(cls, project_dir: Path, tag: str) -> "RunRepo | None":
        project_dir = Path(project_dir).resolve()
        try:
            proc = subprocess.run(["git", "rev-parse", "--show-toplevel", "--show-prefix"], cwd=project_dir,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  env={k: v for k, v in os.environ.items()
                                       if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")})
        except FileNotFoundError:  # git not installed: behave as for a plain folder
            return None
        if proc.returncode != 0:
            return None
        lines = proc.stdout.decode().splitlines()
        root = Path(lines[0])
        prefix = lines[1] if len(lines) > 1 else ""
        return cls(root=root, prefix=prefix, tag=validate_tag(tag))

    # ------------------------------------------------------------------ names
    @property
    def branch_ref(self) -> str:
        return f"refs/heads/autoresearch/{self.tag}"

    def candidate_ref(self, candidate_id: str) -> str:
        return f"refs/autoresearch/{self.tag}/{candidate_id}"

    def generation_tag(self, generation: int) -> str:
        return f"{self.tag}/gen-{generation:03d}-best"

    # ------------------------------------------------------------------ reads
    def resolve(self, ref: str) -> str | None:
        out = _git(self.root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        return out or None

    def user_head(self) -> str | None:
        """The user's HEAD commit (None in a repository without commits)."""
        return self.resolve("HEAD")

    def candidate_commits(self) -> dict[str, str]:
        """candidate id -> full commit sha, for every candidate committed in this run (one git call)."""
        out = _git(self.root, "for-each-ref", "--format=%(refname) %(objectname)",
                   f"refs/autoresearch/{self.tag}/", check=False)
        commits = {}
        prefix = f"refs/autoresearch/{self.tag}/"
        for line in out.splitlines():
            ref, _, sha = line.partition(" ")
            commits[ref[len(prefix):]] = sha
        return commits

    def file_at(self, commit: str, name: str = "train.py") -> str:
        return _git(self.root, "show", f"{commit}:{self.prefix}{name}")

    # ------------------------------------------------------------------ writes
    def _commit_env(self) -> dict:
        if self._identity is None:
            have = _git(self.root, "config", "user.email", check=False) and \
                _git(self.root, "config", "user.name", check=False)
            self._identity = {} if have else dict(FALLBACK_IDENTITY)
        return self._identity

    def commit_train(self, source: str, parent: str | None, message: str) -> str:
        """A commit whose tree is `parent`'s tree with train.py replaced by `source`."""
        blob = _git(self.root, "hash-object", "-w", "--stdin", input=source.encode())
        with tempfile.TemporaryDirectory(prefix="autoresearch-index-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            if parent:
                _git(self.root, "read-tree", parent, env=env)
            else:
                _git(self.root, "read-tree", "--empty", env=env)
            _git(self.root, "update-index", "--add", "--cacheinfo", f"100644,{blob},{self.prefix}train.py", env=env)
            tree = _git(self.root, "write-tree", env=env)
        args = ["commit-tree", tree, "-m", message]
        if parent:
            args[2:2] = ["-p", parent]
        return _git(self.root, *args, env=self._commit_env())

    def record_candidate(self, candidate_id: str, source: str, parent: str | None, message: str) -> str:
        """Commit a candidate (once: an existing ref is returned as is, so resume is idempotent)."""
        existing = self.resolve(self.candidate_ref(candidate_id))
        if existing:
            return existing
        sha = self.commit_train(source, parent, message)
        _git(self.root, "update-ref", self.candidate_ref(candidate_id), sha)
        return sha

    def record_candidates(self, items: list[tuple[str, str, str | None, str]]) -> dict[str, str]:
        """Commit many candidates in ONE `git fast-import` (a generation of 100 costs a few git
        processes, not 500). items: (candidate id, train.py source, parent commit sha or None,
        message). Candidates that already have a ref keep it. Returns candidate id -> sha."""
        existing = self.candidate_commits()
        shas = {cid: existing[cid] for cid, *_ in items if cid in existing}
        todo = [item for item in items if item[0] not in existing]
        if not todo:
            return shas
        env = self._commit_env()
        author = _git(self.root, "var", "GIT_AUTHOR_IDENT", env=env).encode()
        committer = _git(self.root, "var", "GIT_COMMITTER_IDENT", env=env).encode()
        path = _quote_path(f"{self.prefix}train.py").encode()
        chunks = []
        for n, (cid, source, parent, message) in enumerate(todo):
            data, msg = source.encode(), message.encode()
            chunks.append(b"blob\nmark :%d\ndata %d\n%s\n" % (2 * n + 1, len(data), data))
            chunks.append(b"commit %s\nmark :%d\nauthor %s\ncommitter %s\ndata %d\n%s\n"
                          % (self.candidate_ref(cid).encode(), 2 * n + 2, author, committer, len(msg), msg))
            if parent:
                chunks.append(b"from %s\n" % parent.encode())
            chunks.append(b"M 100644 :%d %s\n\n" % (2 * n + 1, path))
        chunks.append(b"done\n")
        with tempfile.TemporaryDirectory(prefix="autoresearch-marks-") as tmp:
            marks = Path(tmp) / "marks"
            _git(self.root, "fast-import", "--quiet", "--done", f"--export-marks={marks}",
                 input=b"".join(chunks), env=env)
            by_mark = dict(line.split(" ", 1) for line in marks.read_text().splitlines() if line.strip())
        for n, (cid, *_rest) in enumerate(todo):
            shas[cid] = by_mark[f":{2 * n + 2}"].strip()
        return shas

    def branch_tip(self) -> str | None:
        return self.resolve(self.branch_ref)

    def advance_branch(self, commit: str) -> None:
        """Move autoresearch/<TAG> to `commit` (compare-and-swap against the tip we saw)."""
        old = self.branch_tip()
        if old == commit:
            return
        args = ["update-ref", "-m", "autoresearch: new incumbent", self.branch_ref, commit]
        if old:
            args.append(old)
        _git(self.root, *args)

    def tag_generation(self, generation: int, commit: str) -> str:
        """Point `<TAG>/gen-NNN-best` at `commit` (lightweight tag; re-tagging on resume is a no-op)."""
        name = self.generation_tag(generation)
        if self.resolve(f"refs/tags/{name}") != commit:
            _git(self.root, "update-ref", f"refs/tags/{name}", commit)
        return name


def _quote_path(path: str) -> str:
    """A path for fast-import's `M` command: C-style quoted when it needs to be."""
    if not any(c in path for c in ' "\\\n\t') and not path.startswith('"'):
        return path
    escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'
