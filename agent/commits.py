"""The run's git record: every executed candidate committed, the incumbent lineage on
`autoresearch/<TAG>`, a `<TAG>/gen-NNN-best` tag per generation (agent/gitops.py does the plumbing
without touching the user's branch, index or working tree).

Git bookkeeping never stops the research: a failure becomes a `git_error` event and a warning.
A context without a repository (not a git project) makes every function here a no-op.
"""
from __future__ import annotations

from agent.gitops import GitError
from agent.memory import BASELINE_ID


def _git_safe(ctx, what: str, fn, *args):
    try:
        return fn(*args)
    except (GitError, OSError) as exc:
        ctx.memory.log_event("git_error", {"what": what, "error": str(exc)})
        ctx.say(f"warning: git {what} failed: {exc}", "yellow")
        return None


def _message(ctx, cand: dict) -> str:
    title = cand["title"] if cand["id"] != BASELINE_ID else "baseline (project train.py)"
    message = f"autoresearch {ctx.tag} {cand['id']}: {title}"
    if cand.get("hypothesis"):
        message += f"\n\n{cand['hypothesis']}"
    return message


def _parent_commit(ctx, cand: dict, commits: dict[str, str]) -> str | None:
    first = cand["parents"][0] if cand["parents"] else None
    parent = (commits.get(first) or commit_candidate(ctx, first, commits)) if first else None
    return parent or ctx.repo.branch_tip() or ctx.repo.user_head()


def commit_candidate(ctx, candidate_id: str, commits: dict[str, str] | None = None) -> str | None:
    """The candidate's commit (created once): its train.py on top of its first parent's commit.
    `commits` (candidate id -> sha) saves a git call per candidate and is updated in place."""
    if ctx.repo is None:
        return None
    commits = ctx.repo.candidate_commits() if commits is None else commits
    if candidate_id in commits:
        return commits[candidate_id]
    cand = ctx.memory.candidate(candidate_id)
    sha = _git_safe(ctx, f"commit of {candidate_id}", ctx.repo.record_candidate, candidate_id,
                    cand["source"] or "", _parent_commit(ctx, cand, commits), _message(ctx, cand))
    if sha:
        commits[candidate_id] = sha
    return sha


def commit_candidates(ctx, candidates: list[dict]) -> dict[str, str]:
    """Commit a round's candidates in one git fast-import (parents committed first)."""
    if ctx.repo is None:
        return {}
    commits = ctx.repo.candidate_commits()
    items = [(c["id"], c["source"] or "", _parent_commit(ctx, c, commits), _message(ctx, c))
             for c in candidates if c["id"] not in commits]
    if items:
        made = _git_safe(ctx, f"commit of {len(items)} candidate(s)", ctx.repo.record_candidates, items)
        commits.update(made or {})
    return commits


def advance(ctx, incumbent: str) -> None:
    """Move autoresearch/<TAG> to the incumbent's commit (the async schedule does it as soon as a
    win is confirmed; the incumbent's commit need not descend from the last one there)."""
    if ctx.repo is None:
        return
    sha = commit_candidate(ctx, incumbent)
    if sha:
        _git_safe(ctx, "branch update", ctx.repo.advance_branch, sha)


def tag(ctx, generation: int, incumbent: str) -> None:
    """Point `<TAG>/gen-NNN-best` at the incumbent's commit."""
    if ctx.repo is None:
        return
    sha = commit_candidate(ctx, incumbent)
    if sha:
        _git_safe(ctx, "tag", ctx.repo.tag_generation, generation, sha)


def promote(ctx, generation: int, incumbent: str) -> None:
    """Advance autoresearch/<TAG> to the incumbent's commit and tag the generation."""
    advance(ctx, incumbent)
    tag(ctx, generation, incumbent)
