"""The REPL, driven like a person would: through a pseudo-terminal, against the stand-in project of
tests/conftest.py. Real parts throughout: the heuristic proposer, the checker, SQLite memory, the
loop, the local runner with harness child processes, git, and $EDITOR as a real child process."""
from __future__ import annotations

import codecs
import io
import os
import re
import select
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, make_project, open_ctx, write_tools
from tests.standins import make_fake_cache

pytestmark = pytest.mark.usefixtures("standin_data")   # the data layout the harness checks

TAG = "demo"

def make_standin_project(root: Path) -> Path:
    """The conftest stand-in project (noiseless, a git repository) with the REPL's tools next to it."""
    write_tools(root)
    make_fake_cache(root / "cache")                 # the data layout the harness checks (child_env)
    return make_project(root / "project", noise=0.0, use_git=True, slots=2,
                        config={"run": {"population": 3}, "selection": {"prior_sigma": 0.0001}})


def child_env(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "AWS_"))}
    env.update({"PYTHONPATH": str(REPO), "EDITOR": f"{sys.executable} {root / 'tools' / 'editor.py'}",
                "TERM": "xterm-256color", "COLUMNS": "200", "LINES": "50",
                "AUTORESEARCH_CACHE": str(root / "cache"), "PYTHONUNBUFFERED": "1"})
    env.pop("VISUAL", None)
    return env


def open_context(proj: Path, *, dry_run: bool = False, console=None):
    return open_ctx(proj, TAG, dry_run=dry_run, console=console)


# --------------------------------------------------------------------------- a pty session
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[=>()][0-9A-Za-z]?|\r")
PROMPT = re.compile(r"autoresearch\[demo\] [^>\n]*> ")


class PtySession:
    """A child process on a pseudo-terminal; `expect` waits for text (ANSI codes stripped)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict):
        import fcntl
        import pty
        import termios
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                                     start_new_session=True)
        os.close(slave)
        self.raw = ""           # everything read
        self.seen = ""          # the same with ANSI codes stripped (a code may span two reads)
        self.pos = 0            # where the next expect starts looking in `seen`
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:          # EIO: the child closed the terminal
            return False
        if not data:
            return False
        self.raw += self._decoder.decode(data)
        self.seen = ANSI.sub("", self.raw)
        return True

    def expect(self, pattern: str | re.Pattern, timeout: float = 60.0) -> str:
        """Wait for `pattern` after the last match; returns the text up to and including it."""
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.seen, self.pos)
            if m:
                chunk = self.seen[self.pos:m.end()]
                self.pos = m.end()
                return chunk
            if time.monotonic() > deadline or (not self._read(0.2) and self.proc.poll() is not None):
                if not self._read(0.1):
                    raise AssertionError(f"did not see {regex.pattern!r}; output since last match:\n"
                                         f"{self.seen[self.pos:][-4000:]}")

    def command(self, line: str, timeout: float = 60.0) -> str:
        """Type a command and return its output (up to the next prompt)."""
        os.write(self.master, (line + "\n").encode())
        out = self.expect(PROMPT, timeout)
        # drop the echoed command line itself
        return out.split("\n", 1)[1] if "\n" in out else out

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            os.close(self.master)


REPL_MAIN = textwrap.dedent('''
    import sys
    from pathlib import Path
    from agent.config import load_settings
    from agent.run_context import open_run
    from agent.repl import run_repl
    ctx = open_run(load_settings(Path("config.yaml")), "demo", Path.cwd(), backend="local",
                   proposer="heuristic", preset="micro")
    sys.exit(run_repl(ctx))
''')


def start_repl(root: Path, proj: Path) -> PtySession:
    session = PtySession([sys.executable, "-c", REPL_MAIN], proj, child_env(root))
    session.expect(PROMPT, timeout=60)
    return session


# --------------------------------------------------------------------------- tests
@pytest.mark.timeout(240)
def test_repl_through_a_pty_proposes_edits_drops_and_launches(tmp_path):
    from agent.memory import Memory
    proj = make_standin_project(tmp_path)
    repl = start_repl(tmp_path, proj)
    try:
        out = repl.command("status")
        assert "none yet" in out                       # a new run: no incumbent measured yet
        # proposing works before the baseline ran: candidates are built on the project's train.py
        out = repl.command("propose 3", timeout=120)
        assert "generation 1:" in out and "g001-c01" in out
        out = repl.command("list")
        assert "g001-c01" in out and "accepted" in out

        out = repl.command("diff g001-c01")
        assert "--- a/train.py" in out and "+++ b/train.py" in out
        out = repl.command("show g001-c01")
        assert "MATRIX_LR" in out and "strategy" in out

        # an accepted edit: the stored source, diff and edits follow what the editor wrote
        out = repl.command("edit g001-c01")
        assert "accepted" in out and "MATRIX_LR = 0.0499" in out
        # a rejected edit: the checker's rule is shown and stored
        (tmp_path / "tools" / "editor_mode").write_text("cheat\n")
        out = repl.command("edit g001-c02")
        assert "rejected" in out and "import-not-allowed" in out
        # an editor that fails leaves the candidate alone
        (tmp_path / "tools" / "editor_mode").write_text("fail\n")
        out = repl.command("edit g001-c01")
        assert "exited with status 3" in out

        out = repl.command("drop g001-c03")
        assert "dropped g001-c03" in out
        out = repl.command(f"add-diff {tmp_path / 'tools' / 'wd.diff'} lower weight decay")
        assert "added" in out and "g001-c04" in out
        out = repl.command('add "try a longer warmdown"')
        assert "add-diff" in out and "ANTHROPIC_API_KEY" in out

        # bad input keeps the session alive
        assert "unknown command 'frobnicate'" in repl.command("frobnicate")
        assert "unknown candidate 'g009-c09'" in repl.command("show g009-c09")
        assert "g000-baseline is the baseline; it cannot be dropped" in repl.command("drop g000-baseline")

        out = repl.command("launch", timeout=180)
        assert "measuring the baseline first" in out and "generation 1 done" in out
        out = repl.command("history")
        assert "g001-c01" in out and "control" in out
        out = repl.command("status")
        assert "incumbent" in out and "nothing" in out       # nothing pending after the launch
        out = repl.command("best")
        assert "g000-baseline" in out
        assert "already run" in repl.command("edit g001-c01")
        os.write(repl.master, b"quit\n")
        assert repl.close() == 0
    finally:
        if repl.proc.poll() is None:
            os.killpg(repl.proc.pid, signal.SIGKILL)
        (tmp_path / "transcript.txt").write_text(repl.seen)    # for reading a failure

    with Memory.open(proj / "runs" / TAG, create=False) as memory:
        gen1 = {c["id"]: c for c in memory.candidates(generation=1)}
        assert gen1["g001-c01"]["check_status"] == "accepted" and gen1["g001-c01"]["origin"] == "human"
        assert "MATRIX_LR = 0.0499" in gen1["g001-c01"]["source"]
        assert {"search", "replace"} <= set(gen1["g001-c01"]["edits"][0])
        assert gen1["g001-c02"]["check_status"] == "rejected"
        assert gen1["g001-c02"]["rule"] == "import-not-allowed"
        assert gen1["g001-c03"]["check_status"] == "dropped"
        assert gen1["g001-c04"]["strategy"] == "human" and "WEIGHT_DECAY = 0.1" in gen1["g001-c04"]["source"]
        ran = {e["candidate_id"] for e in memory.executions(generation=1, kind="candidate")}
        assert ran == {"g001-c01", "g001-c04"}          # the rejected and the dropped one never ran
        assert memory.executions(generation=1, kind="control")
        assert all(e["status"] == "ok" for e in memory.executions(generation=1))
    for cid in ("g001-c01", "g001-c04"):
        ws = proj / "runs" / TAG / "generations" / "gen_001" / cid
        assert (ws / "train.py").is_file() and (ws / "result.json").is_file()


def test_pending_generation_follows_the_loop_phases(tmp_path):
    from agent.memory import Memory
    from agent.phases import pending_generation, set_phase
    from agent.repl import next_generation
    with Memory.open(tmp_path / "r") as m:
        m.ensure_run("r", "micro", "local", "heuristic", {}, str(tmp_path))
        assert pending_generation(m) is None and next_generation(m) == 1
        m.add_candidate(generation=0, strategy="baseline", title="baseline", fingerprint="b", source="x",
                        check_status="accepted", origin="baseline")
        set_phase(m, 0, phase="selected", complete=True)
        assert pending_generation(m) is None and next_generation(m) == 1
        a = m.add_candidate(generation=1, strategy="moderate", title="a", fingerprint="a", source="x",
                            check_status="accepted")
        assert pending_generation(m) == 1                  # no phase yet: a human's additions
        set_phase(m, 1, phase="proposed")
        m.update_candidate(a, check_status="dropped")
        assert pending_generation(m) == 1                  # emptied by the human: still the one to fill
        set_phase(m, 1, phase="selected", complete=False)  # budget left executions pending
        assert pending_generation(m) == 1
        set_phase(m, 1, phase="selected", complete=True)
        assert pending_generation(m) is None and next_generation(m) == 2


def _session(ctx, commands: list[str]) -> str:
    from agent.repl import run_repl
    out = io.StringIO()
    assert run_repl(ctx, stdin=io.StringIO("\n".join(commands) + "\n"), stdout=out) == 0
    return out.getvalue()


def test_errors_keep_the_repl_alive_and_say_what_to_do(tmp_path):
    proj = make_standin_project(tmp_path)
    ctx = open_context(proj, dry_run=True)
    try:
        text = _session(ctx, ["bogus 1", "show", "show nope", "list", "history", "best", "propose x",
                              "propose 2", "launch", "add", 'add "an idea"', "add-diff /does/not/exist",
                              "help add-diff", 'show "unterminated', "status"])
    finally:
        ctx.close()
    assert "unknown command 'bogus'" in text
    assert "usage: show ID" in text
    assert "unknown candidate 'nope'" in text
    assert "usage: propose [N]" in text
    assert "generation 1: 2 proposed" in text             # proposing needs no measured baseline
    assert "no runner (dry run)" in text                  # launch in a dry-run session
    assert "nothing pending" in text
    assert "no finished executions yet" in text
    assert 'usage: add "an idea in words"' in text
    assert "`add` needs the LLM proposer" in text and "add-diff" in text
    assert "/does/not/exist: no such file" in text
    assert "apply a unified diff" in text                 # help for a dashed command
    assert "cannot parse arguments" in text
    assert "demo (micro, local, proposer heuristic)" in text


def test_diff_and_show_are_highlighted_on_a_terminal(tmp_path):
    from rich.console import Console
    from agent.repl import ResearchRepl
    proj = make_standin_project(tmp_path)
    buf = io.StringIO()
    ctx = open_context(proj, dry_run=True, console=Console(file=buf, force_terminal=True, color_system="truecolor",
                                                           width=120))
    try:
        source = (proj / "train.py").read_text()
        ctx.memory.add_candidate(generation=0, strategy="baseline", title="baseline", fingerprint="base",
                                 source=source, check_status="accepted", origin="baseline")
        cid = ctx.memory.add_candidate(generation=1, strategy="moderate", title="lr", fingerprint="f",
                                       source=source.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.05"),
                                       diff="--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-MATRIX_LR = 0.04\n"
                                            "+MATRIX_LR = 0.05\n", check_status="accepted")
        repl = ResearchRepl(ctx, stdin=io.StringIO(""))
        repl.onecmd(f"diff {cid}")
        repl.onecmd(f"show {cid}")
    finally:
        ctx.close()
    text = buf.getvalue()
    assert "\x1b[" in text                                # colour codes: highlighted
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert "+MATRIX_LR = 0.05" in plain and "MATRIX_LR = 0.05" in plain.split("+MATRIX_LR = 0.05", 1)[1]


@pytest.mark.timeout(240)
def test_autopilot_and_repl_take_turns_on_one_run(tmp_path):
    """autopilot runs generation 1, the REPL proposes and launches generation 2, autopilot
    continues with generation 3 — one memory, one git branch, nothing proposed twice."""
    from rich.console import Console
    from agent.loop import run_autopilot
    from agent.phases import get_phase
    proj = make_standin_project(tmp_path)
    quiet = Console(file=io.StringIO(), width=200)

    ctx = open_context(proj, console=quiet)
    try:
        assert run_autopilot(ctx, generations=1, population=2, max_hours=None, budget_usd=None) == 0
    finally:
        ctx.close()

    ctx = open_context(proj, console=quiet)
    try:
        text = _session(ctx, ["status", "propose 2", "launch", "status"])
    finally:
        ctx.close()
    assert re.search(r"last generation run\s+1\b", text)
    assert "generation 2: 2 proposed" in text and "generation 2 done" in text

    ctx = open_context(proj, console=quiet)
    try:
        assert run_autopilot(ctx, generations=3, population=2, max_hours=None, budget_usd=None) == 0
        memory = ctx.memory
        for generation in (1, 2, 3):
            assert get_phase(memory, generation)["phase"] == "selected"
            assert memory.executions(generation=generation, kind="candidate")
            assert memory.executions(generation=generation, kind="control")
        # the REPL's generation 2 was launched by the REPL and not proposed again by autopilot
        assert len(memory.candidates(generation=2)) == 2
        assert len(memory.events("proposed")) == 3
        assert all(e["status"] == "ok" for e in memory.executions())
    finally:
        ctx.close()
    tags = subprocess.run(["git", "tag", "-l"], cwd=proj, capture_output=True, text=True, check=True).stdout.split()
    assert {f"{TAG}/gen-00{g}-best" for g in (1, 2, 3)} <= set(tags)
    assert (proj / "runs" / TAG / "results.tsv").is_file()


def test_add_turns_an_idea_into_a_candidate_with_the_llm(tmp_path, monkeypatch):
    """`add "..."` with a key: the real anthropic SDK against the local fake Messages API."""
    from tests.fake_anthropic import FakeAnthropic, tool_reply
    proj = make_standin_project(tmp_path)
    with FakeAnthropic() as fake:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        fake.queue(tool_reply([{"strategy": "moderate", "title": "longer warmdown",
                                "hypothesis": "more time at low lr helps a short budget",
                                "edits": [{"search": "WARMDOWN_RATIO = 0.5", "replace": "WARMDOWN_RATIO = 0.6"}]}]))
        ctx = open_context(proj, dry_run=True)     # the run's proposer is the heuristic one
        try:
            text = _session(ctx, ['add "spend longer in the warmdown"', "list"])
            cand = ctx.memory.candidate("g001-c01")
            calls = ctx.memory.llm_calls()
        finally:
            ctx.close()
        asked = fake.message_requests()[0].text
    assert "added g001-c01" in text and "longer warmdown" in text
    assert cand["check_status"] == "accepted" and cand["origin"] == "human"
    assert "WARMDOWN_RATIO = 0.6" in cand["source"] and cand["parents"] == ["g000-baseline"]
    assert "spend longer in the warmdown" in asked           # the idea reached the model
    assert calls and calls[0]["cost_usd"] > 0               # and its cost is in memory
