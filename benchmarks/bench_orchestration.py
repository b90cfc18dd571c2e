"""Orchestration overhead and local slot efficiency of the autopilot. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_orchestration.py [--simulated 1000] [--population 100] [--micro] [--no-git]

0. Overhead per candidate at population 1,000 on the simulated backend (`--simulated N`, default
   1000; 0 skips it), both schedules: one generation of N scripted candidates through the whole
   loop (propose, check, workspaces, scheduler, early-stop rule, memory, judging, results.tsv).
   The proposer's own time (N real sandbox.candidate checks) and the simulated runner's own work
   (submit, poll) are timed apart and taken out: what is left, per execution, is the loop's.
1. Overhead per candidate at population N with the INSTANT stand-in train.py of tests/conftest.py
   (target < 50 ms): one generation (propose, check, workspaces, git commits, launch, record,
   results.tsv, selection) on the LocalRunner. Reported three ways:
     * main-thread busy time per execution = (generation wall - time blocked waiting in
       runner.poll) / executions: what the loop itself costs between children;
     * orchestrator CPU per execution (getrusage SELF: the loop process, children excluded);
     * a phase breakdown (propose, workspace build, submit, memory writes, results.tsv, git, select).
   Proposals come from a scripted proposer (N distinct one-knob edits through the real
   sandbox.candidate checks), so no LLM latency is involved; the heuristic proposer's own time is
   reported separately.
2. Local slot efficiency of a real micro run (`--micro`): sum of training_seconds / (slots x wall
   of the executions), and per execution training_seconds / its slot occupancy.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import ScriptedProposer, edit, make_project, open_ctx  # noqa: E402

import agent.baseline as baseline  # noqa: E402
import agent.generations as generations  # noqa: E402
import agent.loop as loop  # noqa: E402
import agent.proposing as proposing  # noqa: E402
import agent.scheduler as scheduler_module  # noqa: E402
from agent.scheduler import Scheduler  # noqa: E402


class PhaseTimer:
    def __init__(self):
        self.total = defaultdict(float)
        self.count = defaultdict(int)

    @contextmanager
    def phase(self, name):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.total[name] += time.perf_counter() - t
            self.count[name] += 1

    def wrap(self, owner, attr, name):
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            with self.phase(name):
                return original(*args, **kwargs)
        timed.__wrapped__ = original
        setattr(owner, attr, timed)
        return original


def scripted_plan(population: int) -> dict:
    """N distinct, valid one-knob candidates (WEIGHT_DECAY 0.2 -> 0.2 + k/10000)."""
    return {1: [("moderate", f"weight decay {0.2 + k / 10000:.4f}",
                 [edit("WEIGHT_DECAY", "0.2", f"{0.2 + k / 10000:.4f}")]) for k in range(1, population + 1)]}


def bench_simulated_overhead(population: int, schedule: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-orch-sim-"))
    try:
        project = make_project(tmp / "proj", noise=0.001,
                               config={"run": {"backend": "simulated", "schedule": schedule},
                                       "simulated": {"slots": 32, "start_at": 0.0}})
        proposer = ScriptedProposer(scripted_plan(population))
        ctx = open_ctx(project, "bench", proposer=proposer)
        ctx.console.quiet = True
        timer = PhaseTimer()
        timer.wrap(proposer, "propose", "proposer (scripted edits + real checks)")
        timer.wrap(ctx.runner, "submit", "simulated runner: submit")
        timer.wrap(ctx.runner, "poll", "simulated runner: poll")
        timer.wrap(scheduler_module, "ensure_workspace", "workspace build")
        timer.wrap(scheduler_module, "write_run_results", "results.tsv render")
        timer.wrap(ctx.memory, "finish_execution", "memory.finish_execution")
        timer.wrap(ctx.memory, "add_execution", "memory.add_execution")
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        code = loop.run_autopilot(ctx, generations=1, population=population)
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        n = len(ctx.memory.executions())
        outside = sum(timer.total[k] for k in timer.total if k.startswith(("proposer", "simulated runner")))
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        print(f"\n== orchestration overhead: simulated backend, {schedule}, population {population}, "
              f"{ctx.runner.settings.slots} slots, exit {code} ==")
        print(f"executions: {n}; wall {wall:.1f} s (CPU {cpu:.1f} s); proposer + runner {outside:.1f} s")
        print(f"loop overhead per execution: {(wall - outside) / n * 1000:.1f} ms   (target < 50 ms)")
        for name in sorted(timer.total, key=lambda k: -timer.total[k]):
            print(f"  {name:42s} {timer.total[name]:7.2f} s  {timer.total[name] / n * 1000:7.2f} ms"
                  f"  ({timer.count[name]} calls)")
        ctx.close()
        for owner, attr in ((scheduler_module, "ensure_workspace"), (scheduler_module, "write_run_results")):
            setattr(owner, attr, getattr(owner, attr).__wrapped__)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_overhead(population: int, use_git: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-orch-"))
    try:
        project = make_project(tmp / "proj", noise=0.001, use_git=use_git, slots=2)
        os.environ["AUTORESEARCH_TIME_BUDGET"] = "0"
        ctx = open_ctx(project, "bench", proposer=ScriptedProposer(scripted_plan(population)))
        ctx.console.quiet = True
        timer = PhaseTimer()
        scheduler = Scheduler(ctx).__enter__()
        # generation 0 first (not measured): the baseline and its repeats
        baseline.ensure_baseline(ctx, scheduler)
        # instrument the phases of one generation
        timer.wrap(proposing, "propose_round", "propose (scripted, incl. checks)")
        timer.wrap(scheduler_module, "ensure_workspace", "workspace build")
        timer.wrap(generations, "commit_candidates", "git commit of candidates (batch)")
        timer.wrap(generations, "promote", "git branch+tag")
        timer.wrap(scheduler_module, "write_run_results", "results.tsv render")
        timer.wrap(generations, "select_generation", "selection")
        timer.wrap(ctx.runner, "submit", "runner.submit")
        timer.wrap(ctx.memory, "finish_execution", "memory.finish_execution")
        timer.wrap(ctx.memory, "mark_started", "memory.mark_started")
        timer.wrap(ctx.memory, "add_execution", "memory.add_execution")
        original_poll = ctx.runner.poll

        def poll(timeout=0.0):
            with timer.phase("blocked in runner.poll"):
                return original_poll(timeout)
        ctx.runner.poll = poll

        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        proposing.ensure_proposed(ctx, 1, population)
        generations.launch_generation(ctx, 1, scheduler)
        wall = time.perf_counter() - t0
        scheduler.__exit__(None, None, None)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        executions = [e for e in ctx.memory.executions(generation=1)]
        n = len(executions)
        child_wall = sum((e["result"] or {}).get("wall_seconds") or 0.0 for e in executions)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        blocked = timer.total["blocked in runner.poll"]
        print(f"\n== orchestration overhead: population {population}, instant stand-in, "
              f"{ctx.runner.slots} slot(s), git={'yes' if use_git else 'no'} ==")
        print(f"executions in generation 1: {n} ({population} candidates + controls/confirmations)")
        print(f"generation wall: {wall:.2f} s; blocked waiting on children: {blocked:.2f} s; "
              f"children's own train.py wall (sum): {child_wall:.2f} s")
        print(f"main-thread busy time per execution: {(wall - blocked) / n * 1000:.1f} ms   (target < 50 ms)")
        print(f"orchestrator CPU per execution:     {cpu / n * 1000:.1f} ms")
        print("phase breakdown (total s / per execution ms):")
        for name in sorted(timer.total, key=lambda k: -timer.total[k]):
            if name == "blocked in runner.poll":
                continue
            print(f"  {name:34s} {timer.total[name]:7.3f} s  {timer.total[name] / n * 1000:7.2f} ms"
                  f"  ({timer.count[name]} calls)")
        ctx.close()

        # the heuristic proposer's own cost for the same population (no LLM involved)
        from agent.proposers.heuristic import HeuristicProposer
        from agent.proposers.base import ProposalRequest
        source = (project / "train.py").read_text()
        request = ProposalRequest(incumbent_source=source, incumbent_id="g000-baseline", program_md="", digest="",
                                  slots=proposing.strategy_slots({"conservative": 3, "moderate": 4, "aggressive": 2,
                                                             "crossover": 1}, population),
                                  preset="micro", generation=1, seed=0)
        t = time.perf_counter()
        proposals = HeuristicProposer(seed=0).propose(request)
        dt = time.perf_counter() - t
        print(f"heuristic proposer: {len(proposals)} proposals in {dt:.2f} s "
              f"({dt / max(1, len(proposals)) * 1000:.1f} ms each)")
    finally:
        os.environ.pop("AUTORESEARCH_TIME_BUDGET", None)
        shutil.rmtree(tmp, ignore_errors=True)


def bench_micro_slots(population: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-micro-"))
    try:
        cache = tmp / "cache"
        env = {**os.environ, "AUTORESEARCH_CACHE": str(cache)}
        subprocess.run([sys.executable, str(REPO / "prepare.py"), "--preset", "micro"], env=env, check=True,
                       capture_output=True)
        os.environ["AUTORESEARCH_CACHE"] = str(cache)
        project = make_project(tmp / "proj", real=True, slots=0)
        ctx = open_ctx(project, "micro")      # config.yaml: proposer heuristic
        ctx.console.quiet = True
        slots = ctx.runner.slots
        t0 = time.time()
        code = loop.run_autopilot(ctx, generations=1, population=population)
        wall = time.time() - t0
        execs = [e for e in ctx.memory.executions() if e["started_at"] and e["ended_at"]]
        first, last = min(e["started_at"] for e in execs), max(e["ended_at"] for e in execs)
        training = sum(e["training_seconds"] or 0.0 for e in execs)
        occupancy = sum(e["ended_at"] - e["started_at"] for e in execs)
        print(f"\n== local slot efficiency: real micro run, {len(execs)} executions, {slots} slot(s) x "
              f"{ctx.runner.threads_per_slot} thread(s), exit {code} ==")
        print(f"autopilot wall {wall:.1f} s; executions span {last - first:.1f} s")
        print(f"training seconds / slot wall-clock = {training:.1f} / ({slots} x {last - first:.1f}) = "
              f"{training / (slots * (last - first)):.1%}")
        print(f"training seconds / slot occupancy (start-up, eval excluded from numerator) = "
              f"{training / occupancy:.1%}")
        print(f"slot busy share (occupancy / slots x span) = {occupancy / (slots * (last - first)):.1%}")
        ctx.close()
    finally:
        os.environ.pop("AUTORESEARCH_CACHE", None)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--simulated", type=int, default=1000, help="population of the simulated benchmark (0: skip)")
    ap.add_argument("--population", type=int, default=100)
    ap.add_argument("--no-git", action="store_true", help="project folder without git")
    ap.add_argument("--micro", action="store_true", help="also measure slot efficiency of a real micro run")
    ap.add_argument("--micro-population", type=int, default=4)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, load average "
          f"{os.getloadavg()[0]:.1f} (shared)")
    if args.simulated:
        for schedule in ("generations", "async"):
            bench_simulated_overhead(args.simulated, schedule)
    if args.population:
        bench_overhead(args.population, use_git=not args.no_git)
    if args.micro:
        bench_micro_slots(args.micro_population)


if __name__ == "__main__":
    main()
