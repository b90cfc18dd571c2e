"""agent/gitops.py against real git repositories in tmp folders: commits and tags on
autoresearch/<TAG> must never move the user's HEAD, index or working tree."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agent.gitops import FALLBACK_IDENTITY, GitError, RunRepo, validate_tag


def git(repo: Path, *args: str, env: dict | None = None) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}).stdout.strip()


@pytest.fixture
def isolated_git(tmp_path, monkeypatch):
    """No global/system git config leaks in (identity, hooks, default branch)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL",
                "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def make_repo(root: Path, identity: bool = True, commit: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    if identity:
        git(root, "config", "user.name", "Test User")
        git(root, "config", "user.email", "test@example.com")
    (root / "train.py").write_text("LR = 0.04\n")
    (root / "prepare.py").write_text("X = 1\n")
    (root / "README.md").write_text("readme\n")
    if commit:
        git(root, "add", ".")
        git(root, "commit", "-q", "-m", "user commit")
    return root


def snapshot(repo: Path) -> dict:
    """Everything of the user's that must not change."""
    return {
        "head": git(repo, "rev-parse", "HEAD"),
        "branch": git(repo, "symbolic-ref", "HEAD"),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "index": git(repo, "ls-files", "--stage"),
        "cached_diff": git(repo, "diff", "--cached"),
        "worktree_diff": git(repo, "diff"),
        "train": (repo / "train.py").read_text(),
    }


def test_commits_and_tags_leave_the_user_checkout_alone(isolated_git):
    repo = make_repo(isolated_git / "proj")
    user_head = git(repo, "rev-parse", "HEAD")
    # uncommitted user work: a modified tracked file, a staged new file, an untracked file
    (repo / "train.py").write_text("LR = 0.05  # user's experiment, not committed\n")
    (repo / "staged.txt").write_text("staged\n")
    git(repo, "add", "staged.txt")
    (repo / "untracked.txt").write_text("untracked\n")
    before = snapshot(repo)

    rr = RunRepo.find(repo, "demo")
    assert rr is not None and rr.prefix == ""
    base = rr.record_candidate("g000-baseline", "LR = 0.04\n", rr.user_head(), "baseline")
    rr.advance_branch(base)
    rr.tag_generation(0, base)
    cand = rr.record_candidate("g001-c01", "LR = 0.03\n", base, "g001-c01: lower lr")
    loser = rr.record_candidate("g001-c02", "LR = 0.09\n", base, "g001-c02: higher lr")
    rr.advance_branch(cand)
    rr.tag_generation(1, cand)

    assert snapshot(repo) == before
    # the branch: baseline on top of the user's HEAD, then the winner; other files from HEAD
    assert git(repo, "rev-parse", "autoresearch/demo") == cand
    assert git(repo, "rev-parse", f"{cand}^") == base
    assert git(repo, "rev-parse", f"{base}^") == user_head
    assert git(repo, "show", "autoresearch/demo:train.py") == "LR = 0.03"
    assert git(repo, "show", "autoresearch/demo:README.md") == "readme"
    assert git(repo, "show", "demo/gen-000-best:train.py") == "LR = 0.04"
    assert git(repo, "rev-parse", "demo/gen-001-best^{commit}") == cand
    # the discarded candidate stays reachable through its ref, off the branch
    assert rr.candidate_commits() == {"g000-baseline": base, "g001-c01": cand, "g001-c02": loser}
    ancestors = git(repo, "rev-list", "autoresearch/demo").split()
    assert loser not in ancestors and cand in ancestors
    assert "g001-c01: lower lr" in git(repo, "log", "-1", "--format=%B", cand)
    assert git(repo, "log", "-1", "--format=%an <%ae>", cand) == "Test User <test@example.com>"


def test_record_candidate_and_tags_are_idempotent(isolated_git):
    repo = make_repo(isolated_git / "proj")
    rr = RunRepo.find(repo, "t1")
    first = rr.record_candidate("g000-baseline", "LR = 0.04\n", rr.user_head(), "baseline")
    again = rr.record_candidate("g000-baseline", "LR = 0.04\n", rr.user_head(), "baseline")
    assert first == again
    rr.advance_branch(first)
    rr.advance_branch(first)
    assert rr.tag_generation(0, first) == "t1/gen-000-best"
    assert rr.tag_generation(0, first) == "t1/gen-000-best"
    assert git(repo, "tag", "--list", "t1/*").split() == ["t1/gen-000-best"]


def test_project_in_a_subfolder_commits_the_right_path(isolated_git):
    root = isolated_git / "mono"
    make_repo(root)
    sub = root / "research" / "exp"
    sub.mkdir(parents=True)
    (sub / "train.py").write_text("A = 1\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "add sub project")
    rr = RunRepo.find(sub, "sub")
    assert rr.prefix == "research/exp/"
    sha = rr.record_candidate("g000-baseline", "A = 2\n", rr.user_head(), "baseline")
    assert git(root, "show", f"{sha}:research/exp/train.py") == "A = 2"
    assert git(root, "show", f"{sha}:train.py") == "LR = 0.04"    # the root train.py is untouched
    assert rr.file_at(sha) == "A = 2"


def test_repository_without_commits_or_identity(isolated_git):
    repo = make_repo(isolated_git / "fresh", identity=False, commit=False)
    rr = RunRepo.find(repo, "fresh")
    assert rr.user_head() is None
    sha = rr.record_candidate("g000-baseline", "LR = 0.04\n", None, "baseline")
    rr.advance_branch(sha)
    assert git(repo, "rev-list", "--count", "autoresearch/fresh") == "1"
    author = git(repo, "log", "-1", "--format=%an <%ae>", sha)
    assert author == f"{FALLBACK_IDENTITY['GIT_AUTHOR_NAME']} <{FALLBACK_IDENTITY['GIT_AUTHOR_EMAIL']}>"
    # the unborn user branch is still unborn and nothing is staged
    assert git(repo, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=repo).returncode != 0
    assert git(repo, "diff", "--cached", "--name-only") == ""


def test_not_a_repository_and_bad_tags(isolated_git):
    plain = isolated_git / "plain"
    plain.mkdir()
    os.environ["GIT_CEILING_DIRECTORIES"] = str(isolated_git)
    try:
        assert RunRepo.find(plain, "x") is None
    finally:
        del os.environ["GIT_CEILING_DIRECTORIES"]
    for bad in ("", "-x", "a b", "a..b", "x.lock", "a/b", ".hidden", "x~1"):
        with pytest.raises(ValueError):
            validate_tag(bad)
    assert validate_tag("demo-1.2_x") == "demo-1.2_x"


def test_advance_branch_refuses_a_concurrent_move(isolated_git):
    """update-ref is compare-and-swap: if someone moved the branch between our read and write,
    git refuses rather than silently dropping their commit."""
    repo = make_repo(isolated_git / "proj")
    rr = RunRepo.find(repo, "cas")
    a = rr.record_candidate("a", "A\n", rr.user_head(), "a")
    b = rr.record_candidate("b", "B\n", a, "b")
    rr.advance_branch(a)
    with pytest.raises(GitError):
        from agent.gitops import _git
        _git(repo, "update-ref", rr.branch_ref, b, rr.user_head())   # stale old value
    assert rr.branch_tip() == a


def test_record_candidates_in_one_fast_import(isolated_git):
    root = isolated_git / "mono"
    make_repo(root)
    sub = root / "my project"           # a path fast-import must quote
    sub.mkdir()
    (sub / "train.py").write_text("A = 1\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "sub")
    before = snapshot(root)
    rr = RunRepo.find(sub, "batch")
    base = rr.record_candidate("g000-baseline", "A = 1\n", rr.user_head(), "baseline")
    items = [(f"g001-c{i:02d}", f"A = {i + 10}\n", base, f"g001-c{i:02d}: A = {i + 10}\n\nwhy") for i in range(1, 31)]
    shas = rr.record_candidates(items)
    assert len(shas) == 30 and len(set(shas.values())) == 30
    for cid, source, parent, message in items:
        sha = shas[cid]
        assert git(root, "show", f"{sha}:my project/train.py") + "\n" == source
        assert git(root, "rev-parse", f"{sha}^") == base
        assert git(root, "show", f"{sha}:README.md") == "readme"      # the rest of the tree is inherited
        assert git(root, "log", "-1", "--format=%B", sha).strip() == message.strip()
    assert rr.candidate_commits() == {"g000-baseline": base, **shas}
    # idempotent: existing refs are returned, nothing is rewritten
    assert rr.record_candidates(items[:3] + [("g001-c99", "A = 99\n", base, "new")])["g001-c01"] == shas["g001-c01"]
    assert snapshot(root) == before
