"""`autoresearch repl --run TAG`: propose the next generation with a human in the loop.

The REPL keeps no state of its own: every command reads the run's memory afresh and every change
is written to it at once, so autopilot and the REPL can take turns on one run (autopilot runs
generation 1, the REPL proposes, edits and launches generation 2, autopilot continues with 3).

The "pending" generation is the oldest one whose candidates the loop has not finished selecting
(the loop records each generation's phase in memory). `propose` adds to it, or opens the next one
when there is none; `launch` runs it through the same loop functions autopilot uses (baseline when
missing, controls, confirmations, selection, git commit/tag, results.tsv). Ctrl-C during `launch`
stops the running executions (recorded as killed) and returns to the prompt; `launch` again re-runs
them as new attempts.
"""
from __future__ import annotations

import cmd
import dataclasses
import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from agent.baseline import NoResultError, add_baseline, ensure_baseline
from agent.digest import lineage, noise_sigma
from agent.generations import launch_generation
from agent.phases import PROPOSED, get_phase, pending_generation, set_phase
from agent.proposing import propose_round, request_for
from agent.recovery import recover_unfinished
from agent.run_context import MeasurementVersionError, prompts_dir_for, require_comparable
from agent.runlock import RunBusyError
from agent.scheduler import Scheduler
from agent.stopping import EarlyStopWatch
from sandbox.statuses import BASELINE, CANDIDATE, OK, STOPPED_EARLY, UNFINISHED_STATUSES

HUMAN_STRATEGY = "human"    # strategy recorded for `add-diff` candidates (no proposer class made them)


class ReplError(Exception):
    """A command that cannot be carried out; shown to the user, the REPL keeps going."""


# --------------------------------------------------------------------------- reading the run
def _has_run(memory, candidate_id: str) -> bool:
    """True once a candidate execution of it was launched (controls of the incumbent don't count)."""
    return any(e["kind"] in (CANDIDATE, BASELINE) for e in memory.executions(candidate_id=candidate_id))


def next_generation(memory) -> int:
    generations = [c["generation"] for c in memory.candidates()]
    generations += [e["generation"] for e in memory.executions()]
    return max([0] + generations) + 1


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _f(value, digits: int = 6) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _edited(title: str) -> str:
    """The title says a human changed the proposal (the proposer's title no longer tells it all)."""
    return title if title.endswith("(edited)") else f"{title} (edited)"


# --------------------------------------------------------------------------- the REPL
class ResearchRepl(cmd.Cmd):
    doc_header = "commands (help COMMAND for details)"

    def __init__(self, ctx, stdin: IO[str] | None = None, stdout: IO[str] | None = None):
        super().__init__(stdin=stdin, stdout=stdout)
        if stdin is not None:
            self.use_rawinput = False      # read the given stream, not the terminal
        if stdout is not None:
            console = Console(file=stdout, force_terminal=False, width=ctx.console.width)
            ctx = dataclasses.replace(ctx, console=console)
        self.ctx = ctx
        self.memory = ctx.memory
        self.console = ctx.console
        self._llm = None                   # an LLM proposer made on demand for `add`

    # ------------------------------------------------------------------ plumbing
    @property
    def prompt(self) -> str:           # recomputed each time: autopilot may have moved on meanwhile
        pending = pending_generation(self.memory)
        where = f"gen {pending}" if pending is not None else f"next gen {next_generation(self.memory)}"
        return f"autoresearch[{self.ctx.tag}] {where}> "

    def say(self, *objects, **kwargs) -> None:
        self.console.print(*objects, **kwargs)

    def error(self, message: str) -> None:
        self.console.print(f"[red]error:[/red] {message}", highlight=False)

    def onecmd(self, line: str) -> bool:
        """Run one command; no error, however unexpected, ends the session."""
        try:
            return bool(super().onecmd(line))
        except ReplError as exc:
            self.error(str(exc))
        except KeyboardInterrupt:
            self.say("[yellow]interrupted[/yellow]")
        except Exception as exc:   # noqa: BLE001 - a REPL must survive bugs and backend errors alike
            self.error(f"{type(exc).__name__}: {exc}")
        return False

    def emptyline(self) -> bool:       # cmd's default repeats the last command: not for `launch`
        return False

    def default(self, line: str) -> bool:
        word = line.split()[0] if line.split() else line
        self.error(f"unknown command {word!r}; type `help` for the list")
        return False

    def completenames(self, text, *ignored):
        return [n.replace("_", "-") for n in super().completenames(text.replace("-", "_"), *ignored)]

    def precmd(self, line: str) -> str:
        # `add-diff` is a command name cmd cannot dispatch (no '-' in method names)
        head, _, rest = line.strip().partition(" ")
        return f"{head.replace('-', '_')} {rest}".strip() if head else line

    def do_help(self, arg: str) -> None:
        """help [COMMAND] — the commands, or one command's details."""
        super().do_help(arg.replace("-", "_"))

    def _args(self, arg: str) -> list[str]:
        try:
            return shlex.split(arg)
        except ValueError as exc:
            raise ReplError(f"cannot parse arguments ({exc}); quote text with \"...\"") from None

    def _candidate(self, candidate_id: str) -> dict:
        try:
            return self.memory.candidate(candidate_id)
        except KeyError:
            known = ", ".join(c["id"] for c in self.memory.candidates()[-12:]) or "none yet"
            raise ReplError(f"unknown candidate {candidate_id!r} (recent: {known})") from None

    def _one_id(self, arg: str, command: str) -> dict:
        args = self._args(arg)
        if len(args) != 1:
            raise ReplError(f"usage: {command} ID")
        return self._candidate(args[0])

    def _changeable(self, candidate: dict, action: str) -> None:
        if candidate.get("origin") == "baseline" or candidate["generation"] == 0:
            raise ReplError(f"{candidate['id']} is the baseline; it cannot be {action}")
        if _has_run(self.memory, candidate["id"]):
            raise ReplError(f"{candidate['id']} has already run; its record is history and cannot be {action} "
                            f"(add a new candidate instead)")

    def _base(self, generation: int) -> dict:
        """The candidate a generation's candidates are built on and judged against: the incumbent
        the generation started with (the loop's phase), else the current incumbent, else the
        project's train.py as the (not yet measured) baseline."""
        cid = get_phase(self.memory, generation).get("incumbent") or self.memory.incumbent_id()
        return self.memory.candidate(cid or add_baseline(self.ctx))

    def _target_generation(self) -> int:
        pending = pending_generation(self.memory)
        return pending if pending is not None else next_generation(self.memory)

    def _open_generation(self, generation: int, base: dict) -> None:
        """A generation the REPL adds to without `propose` is marked proposed (against `base`), so a
        later autopilot launches the human's candidates instead of proposing a generation over them."""
        if not get_phase(self.memory, generation).get("phase"):
            set_phase(self.memory, generation, phase=PROPOSED, incumbent=base["id"])

    def complete_ids(self, text, *ignored):
        return [c["id"] for c in self.memory.candidates() if c["id"].startswith(text)]

    complete_show = complete_diff = complete_edit = complete_drop = complete_ids

    # ------------------------------------------------------------------ proposing
    def do_baseline(self, arg: str) -> None:
        """baseline — measure the unmodified train.py now (generation 0, run several times so the
        noise is measured); `launch` does it by itself when needed."""
        self._need_runner("baseline")
        try:
            require_comparable(self.ctx)
            with Scheduler(self.ctx) as scheduler:
                recover_unfinished(self.ctx)
                ensure_baseline(self.ctx, scheduler)
        except (RunBusyError, NoResultError, MeasurementVersionError) as exc:
            raise ReplError(str(exc)) from None
        self.do_status("")

    def do_propose(self, arg: str) -> None:
        """propose [N] — ask the proposer for N candidates (default: the run's population) into the
        pending generation, or into a new one when nothing is pending."""
        args = self._args(arg)
        try:
            population = int(args[0]) if args else self.ctx.settings.run.population
        except ValueError:
            raise ReplError(f"usage: propose [N] (N a whole number, got {args[0]!r})") from None
        if population < 1 or len(args) > 1:
            raise ReplError("usage: propose [N] with N >= 1")
        generation = self._target_generation()
        with self.console.status(f"proposing {population} candidate(s) for generation {generation} "
                                 f"({self.ctx.proposer.name})..."):
            ids = propose_round(self.ctx, generation, population)
        accepted = [i for i in ids if self.memory.candidate(i)["check_status"] == "accepted"]
        self.say(f"generation {generation}: {len(ids)} proposed, {len(accepted)} accepted")
        self.do_list(str(generation))

    def do_add(self, arg: str) -> None:
        """add "an idea in words" — the LLM turns the idea into a candidate (needs ANTHROPIC_API_KEY)."""
        idea = arg.strip()
        if len(idea) >= 2 and idea[0] == idea[-1] and idea[0] in "\"'":
            idea = idea[1:-1].strip()
        if not idea:
            raise ReplError('usage: add "an idea in words"')
        proposer = self._idea_proposer()
        if proposer is None:
            self.say("`add` needs the LLM proposer, and ANTHROPIC_API_KEY is not set. Offline, write the change "
                     "yourself: `add-diff FILE` applies a unified diff to the incumbent, or `edit ID` a candidate.")
            return
        generation = self._target_generation()
        incumbent = self._base(generation)
        request = self._request(incumbent, generation)
        with self.console.status("asking the LLM to turn the idea into a candidate..."):
            proposal = proposer.propose_from_idea(idea, request)
        cid = self.memory.add_candidate(
            generation=generation, strategy=proposal.strategy, title=proposal.title,
            hypothesis=proposal.hypothesis or idea, edits=proposal.edits, parents=proposal.parents or [incumbent["id"]],
            diff=proposal.diff, fingerprint=proposal.fingerprint, source=proposal.source,
            check_status="accepted" if proposal.accepted else "rejected", rule=proposal.rule,
            reason=proposal.reason, proposer=proposal.proposer or "llm", origin="human", attempts=proposal.attempts)
        self._open_generation(generation, incumbent)
        self._report_added(cid)

    def _idea_proposer(self):
        """The LLM proposer for `add`: the run's own when it is one, else one made on demand (a run
        proposed heuristically can still take a human's idea); None without an API key."""
        if not os.environ.get("ANTHROPIC_API_KEY"):
            return None
        if hasattr(self.ctx.proposer, "propose_from_idea"):
            return self.ctx.proposer
        if self._llm is None:
            from agent.proposers.factory import make_proposer
            self._llm = make_proposer("llm", self.ctx.settings, memory=self.memory, console=self.console,
                                      prompts_dir=prompts_dir_for(self.ctx.project_dir))
        return self._llm if hasattr(self._llm, "propose_from_idea") else None

    def _request(self, incumbent: dict, generation: int):
        # the same request (and seed rule) autopilot builds, for one candidate
        return request_for(self.ctx, generation, incumbent, {"moderate": 1})

    def do_add_diff(self, arg: str) -> None:
        """add-diff FILE [TITLE] — apply a unified diff (a/train.py b/train.py) to the incumbent and
        add the result, checked like any candidate."""
        args = self._args(arg)
        if not args:
            raise ReplError("usage: add-diff FILE [TITLE]")
        path = Path(args[0]).expanduser()
        if not path.is_file():
            raise ReplError(f"{path}: no such file")
        title = " ".join(args[1:]) or f"human diff {path.name}"
        generation = self._target_generation()
        incumbent = self._base(generation)
        from sandbox.edits import EditError, apply_unified_diff, diff_to_edits
        try:
            applied = apply_unified_diff(incumbent["source"], path.read_text())
        except EditError as exc:
            raise ReplError(f"{path} does not apply to the incumbent {incumbent['id']}: {exc}") from None
        if not applied.diff:
            raise ReplError(f"{path} changes nothing in the incumbent {incumbent['id']}")
        edits = diff_to_edits(incumbent["source"], applied.source)
        check = self._check(incumbent, edits)
        cid = self.memory.add_candidate(
            generation=generation, strategy=HUMAN_STRATEGY, title=title,
            hypothesis=f"human-written change from {path.name}", edits=edits, parents=[incumbent["id"]],
            diff=check.diff or applied.diff, fingerprint=check.fingerprint or "",
            source=check.source if check.ok else applied.source,
            check_status="accepted" if check.ok else "rejected",
            rule=None if check.ok else check.rule, reason=None if check.ok else check.message,
            proposer="human", origin="human")
        self._open_generation(generation, incumbent)
        self._report_added(cid, check)

    def _check(self, incumbent: dict, edits: list[dict], ignore_fingerprint: str | None = None):
        from sandbox.candidate import build_candidate
        seen = set(self.memory.fingerprints())
        if ignore_fingerprint:
            seen.discard(ignore_fingerprint)
        return build_candidate(incumbent["source"], edits, seen)

    def _report_added(self, cid: str, check=None) -> None:
        cand = self.memory.candidate(cid)
        if cand["check_status"] == "accepted":
            self.say(f"added [bold]{cid}[/bold] ({cand['strategy']}): {cand['title']}")
        else:
            self.say(f"added {cid} as [red]rejected[/red] ({cand.get('rule')}): {cand.get('reason')}")
            self._violations(check)

    def _violations(self, check) -> None:
        for v in getattr(check, "violations", None) or []:
            line = getattr(v, "line", None)
            self.say(f"  [red]{getattr(v, 'rule', '?')}[/red]: {getattr(v, 'message', v)}"
                     + (f" (line {line})" if line else ""), highlight=False)

    # ------------------------------------------------------------------ looking
    def do_list(self, arg: str) -> None:
        """list [GEN] — the candidates of the pending generation (or of GEN)."""
        args = self._args(arg)
        if args:
            try:
                generation = int(args[0].lstrip("g"))
            except ValueError:
                raise ReplError(f"usage: list [GEN] (a generation number, got {args[0]!r})") from None
        else:
            generation = pending_generation(self.memory)
            if generation is None:
                self.say(f"nothing pending; `propose` opens generation {next_generation(self.memory)}")
                return
        rows = self.memory.candidates(generation=generation)
        table = Table(title=f"generation {generation}")
        for col in ("id", "strategy", "title", "check", "ran", "val_bpb"):
            table.add_column(col, no_wrap=col in ("id", "ran", "val_bpb"), overflow="fold")
        colour = {"accepted": "green", "rejected": "red", "dropped": "dim"}
        for c in rows:
            bpbs = self.memory.val_bpbs(c["id"])
            status = c["check_status"] + (f" ({c['rule']})" if c.get("rule") else "")
            table.add_row(c["id"], c["strategy"], c["title"], f"[{colour.get(c['check_status'], 'white')}]{status}[/]",
                          "yes" if _has_run(self.memory, c["id"]) else "", _f(_mean(bpbs)))
        self.say(table if rows else f"generation {generation} has no candidates yet")

    def do_show(self, arg: str) -> None:
        """show ID — a candidate's metadata and its train.py, highlighted."""
        c = self._one_id(arg, "show")
        bpbs = self.memory.val_bpbs(c["id"])
        meta = Table.grid(padding=(0, 2))
        meta.add_column(style="bold")
        meta.add_column()
        for key, value in (("id", c["id"]), ("generation", c["generation"]), ("strategy", c["strategy"]),
                           ("title", c["title"]), ("hypothesis", c.get("hypothesis") or "-"),
                           ("parents", ", ".join(c.get("parents") or []) or "-"),
                           ("check", c["check_status"] + (f" ({c['rule']}: {c.get('reason')})" if c.get("rule") else "")),
                           ("origin", f"{c.get('origin')} / {c.get('proposer') or '-'}"),
                           ("val_bpb", f"{_f(_mean(bpbs))} (n={len(bpbs)})"),
                           ("verdict", c.get("verdict") or "-")):
            meta.add_row(key, str(value))
        self.say(meta)
        if c.get("source"):
            self.say(Syntax(c["source"], "python", line_numbers=True, word_wrap=True))
        else:
            self.say("(no train.py stored: the edits never applied)")

    def do_diff(self, arg: str) -> None:
        """diff ID — the candidate's unified diff against its parent, highlighted."""
        c = self._one_id(arg, "diff")
        if not c.get("diff"):
            self.say(f"{c['id']} has no diff (the baseline, or edits that never applied)")
            return
        self.say(Syntax(c["diff"], "diff", word_wrap=True))

    def do_status(self, arg: str) -> None:
        """status — generation, incumbent, noise, spend and what is pending."""
        memory = self.memory
        incumbent = memory.incumbent_id()
        bpbs = memory.val_bpbs(incumbent) if incumbent else []
        sigma = noise_sigma(memory)
        spend = memory.spend()
        pending = pending_generation(memory)
        waiting = [c for c in memory.candidates(generation=pending) if c["check_status"] == "accepted"
                   and not _has_run(memory, c["id"])] if pending is not None else []
        done = [e["generation"] for e in memory.executions() if e.get("status") not in UNFINISHED_STATUSES]
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("run", f"{self.ctx.tag} ({self.ctx.preset}, {self.ctx.backend}, proposer {self.ctx.proposer.name})")
        grid.add_row("last generation run", str(max(done)) if done else "none")
        grid.add_row("incumbent", f"{incumbent} val_bpb {_f(_mean(bpbs))} (n={len(bpbs)})" if incumbent
                     else "none yet (`baseline` measures it; `launch` does too)")
        grid.add_row("noise sigma", _f(sigma))
        grid.add_row("spend", f"${spend['total_usd']:.2f} (compute ${spend['compute_usd']:.2f}, "
                              f"LLM ${spend['llm_usd']:.2f})")
        grid.add_row("pending", f"generation {pending}: {len(waiting)} candidate(s) ready to launch"
                     if pending is not None else f"nothing; `propose` opens generation {next_generation(memory)}")
        self.say(grid)

    def do_history(self, arg: str) -> None:
        """history [N] — the last N finished executions (default 30)."""
        args = self._args(arg)
        try:
            limit = int(args[0]) if args else 30
        except ValueError:
            raise ReplError(f"usage: history [N] (got {args[0]!r})") from None
        finished = [e for e in self.memory.executions() if e["status"] not in UNFINISHED_STATUSES][-limit:]
        if not finished:
            self.say("no finished executions yet")
            return
        titles = {c["id"]: c for c in self.memory.candidates()}
        table = Table(title=f"last {len(finished)} finished executions")
        for col in ("exec", "gen", "candidate", "kind", "strategy", "title", "status", "val_bpb", "train s"):
            # ids and numbers stay on one line; the title gives way on a narrow terminal
            table.add_column(col, no_wrap=col != "title", overflow="ellipsis" if col != "title" else "fold")
        for e in finished:
            c = titles.get(e["candidate_id"], {})
            style = "green" if e["status"] == OK else "yellow" if e["status"] == STOPPED_EARLY else "red"
            table.add_row(e["id"], str(e["generation"]), e["candidate_id"], e["kind"], c.get("strategy", ""),
                          (c.get("title") or "")[:40], f"[{style}]{e['status']}[/]", _f(e.get("val_bpb")),
                          _f(e.get("training_seconds"), 1))
        self.say(table)

    def do_best(self, arg: str) -> None:
        """best — the incumbent and its lineage from the baseline."""
        steps = lineage(self.memory)
        if not steps:
            self.say("no incumbent yet (`baseline` measures it)")
            return
        table = Table(title=f"incumbent {steps[-1]['id']} and its lineage")
        for col in ("id", "strategy", "title", "val_bpb", "runs", "gain vs parent"):
            table.add_column(col, no_wrap=col != "title", overflow="fold")
        for step in steps:
            gain = step.get("delta_vs_parent")
            table.add_row(step["id"], step["strategy"], step["title"], _f(step.get("mean_val_bpb")),
                          str(step.get("runs", 0)), "-" if gain is None else f"{gain:+.6f}")
        self.say(table)

    # ------------------------------------------------------------------ changing
    def do_drop(self, arg: str) -> None:
        """drop ID — leave a proposed candidate out of the launch (kept in memory as dropped)."""
        c = self._one_id(arg, "drop")
        self._changeable(c, "dropped")
        if c["check_status"] == "dropped":
            self.say(f"{c['id']} is already dropped")
            return
        self.memory.update_candidate(c["id"], check_status="dropped")
        self.memory.log_event("repl_drop", {"candidate_id": c["id"]}, c["generation"])
        self.say(f"dropped {c['id']}: {c['title']}")

    def do_edit(self, arg: str) -> None:
        """edit ID — open $EDITOR on the candidate's train.py, then re-check it against the incumbent."""
        c = self._one_id(arg, "edit")
        self._changeable(c, "edited")
        incumbent = self._base(c["generation"])
        before = c.get("source") or incumbent["source"]
        after = self._run_editor(before, c["id"])
        if after == before:
            self.say(f"no change to {c['id']}")
            return
        from sandbox.edits import diff_to_edits, unified_diff
        if after == incumbent["source"]:
            raise ReplError(f"the edited file is identical to the incumbent {incumbent['id']}; "
                            f"`drop {c['id']}` if you do not want it")
        edits = diff_to_edits(incumbent["source"], after)
        own = c["fingerprint"] if c["check_status"] == "accepted" else None
        check = self._check(incumbent, edits, ignore_fingerprint=own)
        if check.ok:
            self.memory.update_candidate(c["id"], source=check.source, diff=check.diff, title=_edited(c["title"]),
                                         fingerprint=check.fingerprint, edits=edits, parents=[incumbent["id"]],
                                         check_status="accepted", rule=None, reason=None, origin="human")
            self.memory.log_event("repl_edit", {"candidate_id": c["id"], "ok": True}, c["generation"])
            self.say(f"{c['id']} edited and re-checked: [green]accepted[/green]")
            self.say(Syntax(check.diff, "diff", word_wrap=True))
        else:
            # keep what the human wrote, so the next `edit` starts from it
            self.memory.update_candidate(c["id"], source=after, diff=unified_diff(incumbent["source"], after),
                                         edits=edits, title=_edited(c["title"]), parents=[incumbent["id"]], check_status="rejected",
                                         rule=check.rule, reason=check.message, origin="human")
            self.memory.log_event("repl_edit", {"candidate_id": c["id"], "ok": False, "rule": check.rule},
                                  c["generation"])
            self.say(f"{c['id']} edited but [red]rejected[/red] ({check.rule}): {check.message}")
            self._violations(check)
            self.say(f"`edit {c['id']}` again to fix it, or `drop {c['id']}`")

    def _run_editor(self, text: str, candidate_id: str) -> str:
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        with tempfile.TemporaryDirectory(prefix=f"autoresearch-{candidate_id}-") as tmp:
            path = Path(tmp) / "train.py"          # the real name, so editors highlight Python
            path.write_text(text)
            try:
                proc = subprocess.run([*shlex.split(editor), str(path)])
            except FileNotFoundError:
                raise ReplError(f"editor {editor!r} not found; set $EDITOR") from None
            if proc.returncode != 0:
                raise ReplError(f"editor {editor!r} exited with status {proc.returncode}; {candidate_id} unchanged")
            return path.read_text()

    # ------------------------------------------------------------------ running
    def _need_runner(self, what: str) -> None:
        if self.ctx.runner is None:
            raise ReplError(f"`{what}` runs training, but this session has no runner (dry run)")

    def do_launch(self, arg: str) -> None:
        """launch — run the pending generation (its candidates, the incumbent's controls, confirmations,
        selection) with the live view; measures the baseline first when that was never done."""
        self._need_runner("launch")
        generation = pending_generation(self.memory)
        if generation is None:
            raise ReplError("nothing pending to launch; `propose` first")
        ready = [c for c in self.memory.candidates(generation=generation)
                 if c["check_status"] == "accepted" and not _has_run(self.memory, c["id"])]
        started = [c for c in self.memory.candidates(generation=generation) if _has_run(self.memory, c["id"])]
        if not ready and not started:
            raise ReplError(f"generation {generation} has no accepted candidate to run; `propose` more")
        try:
            require_comparable(self.ctx)
            with Scheduler(self.ctx, early_stop=EarlyStopWatch.for_run(self.ctx)) as scheduler:
                # executions a killed earlier session left "running" are marked lost and re-run
                recover_unfinished(self.ctx)
                if self.memory.incumbent_id() is None:
                    self.say("measuring the baseline first (generation 0)")
                    ensure_baseline(self.ctx, scheduler)
                summary = launch_generation(self.ctx, generation, scheduler)
        except (RunBusyError, NoResultError, MeasurementVersionError) as exc:
            raise ReplError(str(exc)) from None
        self.say(f"generation {generation} done")
        if isinstance(summary, dict) and summary:
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold")
            grid.add_column()
            for key, value in summary.items():
                if isinstance(value, float):
                    grid.add_row(str(key), f"{value:.6f}")
                elif isinstance(value, (str, int, bool)) or value is None:
                    grid.add_row(str(key), "-" if value is None else str(value))
            self.say(grid)
        self.do_best("")

    # ------------------------------------------------------------------ leaving
    def do_quit(self, arg: str) -> bool:
        """quit — leave (everything is already in memory)."""
        return True

    do_exit = do_quit

    def do_EOF(self, arg: str) -> bool:
        self.say("")
        return True


def run_repl(ctx, stdin: IO[str] | None = None, stdout: IO[str] | None = None) -> int:
    """Run the REPL on an opened run until `quit` or end of input; returns the exit code (0)."""
    repl = ResearchRepl(ctx, stdin=stdin, stdout=stdout)
    repl.say(f"autoresearch REPL on run [bold]{ctx.tag}[/bold]: propose, list, show, diff, edit, drop, add, "
             f"add-diff, launch, status, history, best, baseline, quit (help for more)")
    try:
        repl.do_status("")
    except Exception as exc:    # noqa: BLE001 - a status problem must not block the session
        repl.error(str(exc))
    while True:
        try:
            repl.cmdloop()
            return 0
        except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh prompt, not an exit
            repl.say("\n(Ctrl-C: type `quit` to leave)")
