"""`autoresearch`: the command line. Thin on purpose: parse, load config, call one function.

Every command acts on the project folder it is run in (train.py, prepare.py, program.md,
config.yaml) and writes under ./runs/. Heavy imports happen inside the commands so that
`autoresearch --help` is instant.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="LLM-driven research on train.py: propose, check, train in parallel, keep what beats the noise.")
aws_app = typer.Typer(no_args_is_help=True, help="AWS set-up for the SageMaker backend.")
app.add_typer(aws_app, name="aws")

console = Console()
err_console = Console(stderr=True)

ConfigOpt = typer.Option(None, "--config", help="config.yaml to use (default: ./config.yaml).")


def _settings(config: Optional[Path], overrides: dict | None = None):
    from agent.config import ConfigError, load_settings
    try:
        settings = load_settings(config, overrides)
    except ConfigError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    for note in settings.notes:
        err_console.print(f"config: {note}", style="yellow", highlight=False, markup=False)
    return settings


def _open(run: str, config: Optional[Path], *, create: bool, **overrides):
    """Open an existing run for the REPL / replay / report; unknown tags list the known ones."""
    from agent.memory import MemoryStoreError
    from agent.run_context import open_run
    settings = overrides.pop("settings", None) or _settings(config)
    try:
        return open_run(settings, run, Path.cwd(), create=create, console=console,
                        **{k: v for k, v in overrides.items() if v is not None})
    except (FileNotFoundError, LookupError, ValueError, MemoryStoreError) as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)


@app.command()
def prepare(
    preset: str = typer.Option("auto", help="gpu | cpu | micro | auto (gpu when CUDA is present)."),
    source: Optional[str] = typer.Option(None, help="climbmix | stdlib | a folder of .txt/.parquet files."),
    num_shards: Optional[int] = typer.Option(None, help="Training shards to download (climbmix)."),
    upload: bool = typer.Option(False, "--upload", help="Also upload data and tokenizer to the run bucket (SageMaker)."),
    config: Optional[Path] = ConfigOpt,
):
    """Prepare the data and tokenizer for a preset (idempotent; cached under AUTORESEARCH_CACHE)."""
    from agent.run_one import prepare_data
    settings = _settings(config) if upload else None
    try:
        prepare_data(preset, source=source, num_shards=num_shards, upload=upload, settings=settings)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)


@app.command("run-one")
def run_one(
    path: Path = typer.Argument(Path("train.py"), help="The train.py to run."),
    preset: str = typer.Option("auto", help="gpu | cpu | micro | auto."),
    threads: int = typer.Option(0, help="CPU threads for the child (0 = all cores)."),
):
    """Run one train.py through the harness and print its result (debugging a single experiment)."""
    from agent.run_one import run_one as _run_one
    try:
        result = _run_one(path, preset=preset, project_dir=Path.cwd(), threads=threads)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    raise typer.Exit(0 if result.get("status") == "ok" else 1)


@app.command()
def check(
    file: Path = typer.Argument(..., help="A candidate train.py."),
    preflight: bool = typer.Option(False, "--preflight",
                                   help="Also run it for a few steps at the micro preset on this machine."),
):
    """Check a candidate against the experiment's rules. Exit 0 accepted, 1 rejected."""
    from sandbox.check import check_command
    code = check_command(file)
    if code == 0 and preflight:
        from sandbox.preflight import preflight as run_preflight
        result = run_preflight(file.read_text(), Path.cwd())
        console.print(f"PREFLIGHT {result.reason}")
        code = 0 if result.ok else 1
    raise typer.Exit(code)


@app.command()
def autopilot(
    run: Optional[str] = typer.Option(None, "--run", help="Run tag: results go to runs/<TAG>/; the same tag "
                                      "resumes. Without it: a new run tagged with its start time."),
    generations: Optional[int] = typer.Option(None, help="Generations after the baseline (config: run.generations)."),
    population: Optional[int] = typer.Option(None, help="Candidates per generation (config: run.population)."),
    preset: Optional[str] = typer.Option(None, help="gpu | cpu | micro | auto (config: run.preset)."),
    backend: Optional[str] = typer.Option(None, help="local | sagemaker | simulated (config: run.backend)."),
    proposer: Optional[str] = typer.Option(None, help="llm | heuristic | auto (config: run.proposer)."),
    schedule: Optional[str] = typer.Option(None, help="async | generations (config: run.schedule)."),
    budget_usd: Optional[float] = typer.Option(None, "--budget-usd", help="Dollar cap, compute + LLM."),
    max_hours: Optional[float] = typer.Option(None, "--max-hours", help="No new launches after this many hours."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Propose and check, show what would run and its cost; launch nothing."),
    json_mode: bool = typer.Option(False, "--json", help="JSON lines on stdout for coding-agent sessions."),
    config: Optional[Path] = ConfigOpt,
):
    """Run the research loop unattended: baseline, then propose -> check -> run -> select -> remember."""
    from agent.loop import autopilot_command
    raise typer.Exit(autopilot_command(
        run=run, generations=generations, population=population, preset=preset, backend=backend,
        proposer=proposer, schedule=schedule, config=config, budget_usd=budget_usd, max_hours=max_hours,
        dry_run=dry_run, json_mode=json_mode))


@app.command()
def repl(
    run: str = typer.Option(..., "--run", help="Run tag (created when new)."),
    preset: Optional[str] = typer.Option(None, help="gpu | cpu | micro | auto."),
    backend: Optional[str] = typer.Option(None, help="local | sagemaker | simulated."),
    proposer: Optional[str] = typer.Option(None, help="llm | heuristic | auto."),
    config: Optional[Path] = ConfigOpt,
):
    """Propose the next generation with a human in the loop (shares memory with autopilot)."""
    from agent.repl import run_repl
    ctx = _open(run, config, create=True, preset=preset, backend=backend, proposer=proposer)
    raise typer.Exit(run_repl(ctx))


@app.command()
def replay(
    run: str = typer.Option(..., "--run", help="Run tag to replay from."),
    generation: Optional[List[int]] = typer.Option(None, "--generation", help="Generation(s) to replay."),
    candidate: Optional[str] = typer.Option(None, help="One candidate id."),
    lineage: bool = typer.Option(False, "--lineage", help="Replay the incumbent's lineage."),
    repeats: int = typer.Option(1, "--repeats", min=1, help="Runs per candidate."),
    backend: Optional[str] = typer.Option(None, help="Backend for the replays (default: the run's)."),
    preset: Optional[str] = typer.Option(None, help="Preset for the replays (default: the run's)."),
    instance_type: Optional[str] = typer.Option(None, "--instance-type", help="SageMaker instance type for the replays."),
    config: Optional[Path] = ConfigOpt,
):
    """Re-run recorded candidates K times, on the same or another backend/preset/instance type."""
    from agent.replay import run_replay
    settings = _settings(config, {"sagemaker.instance_type": instance_type})
    # the preset switch is replay's own business (the run keeps its preset; replays record theirs)
    ctx = _open(run, config, create=False, backend=backend, settings=settings)
    raise typer.Exit(run_replay(ctx, generations=generation or None, candidate=candidate,
                                lineage=lineage, repeats=repeats, preset=preset))


@app.command()
def report(run: str = typer.Option(..., "--run", help="Run tag."), config: Optional[Path] = ConfigOpt):
    """Write runs/<TAG>/report.md and progress.png."""
    from agent.report import build_report
    ctx = _open(run, config, create=False)
    md, png = build_report(ctx.memory, ctx.run_dir)
    console.print(f"wrote {md}\nwrote {png}")


@aws_app.command("setup")
def aws_setup(
    preset: Optional[str] = typer.Option(None, help="Upload this preset's prepared data (default: run.preset)."),
    upload: bool = typer.Option(True, "--upload/--no-upload", help="Upload prepared data and tokenizer."),
    config: Optional[Path] = ConfigOpt,
):
    """Create or reuse the execution role and bucket, and upload prepared data (idempotent)."""
    from agent.aws_setup import aws_setup as _setup
    settings = _settings(config)
    try:
        for line in _setup(settings, preset=preset, upload=upload):
            console.print(line)
    except (RuntimeError, ValueError, FileNotFoundError) as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)


@aws_app.command("build-image")
def build_image(
    tag: str = typer.Option("latest", help="Image tag."),
    repository: str = typer.Option("autoresearch-training", help="ECR repository (created when missing)."),
    config: Optional[Path] = ConfigOpt,
):
    """Build docker/Dockerfile FROM the PyTorch training DLC and push it to ECR (for sagemaker.image_uri)."""
    from agent.build_image import build_image as _build
    settings = _settings(config)
    try:
        for line in _build(settings, tag=tag, repository=repository):
            console.print(line, highlight=False)
    except (RuntimeError, ValueError) as exc:
        err_console.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(1)


@app.command()
def doctor(config: Optional[Path] = ConfigOpt):
    """Check credentials, region, role, bucket, data, spot quota and image URI: one line each."""
    from agent.aws_setup import doctor as _doctor
    settings = _settings(config)
    checks = _doctor(settings)
    marks = {True: "[green]PASS[/green]", False: "[red]FAIL[/red]", None: "[yellow]SKIP[/yellow]"}
    for c in checks:
        console.print(f"{marks[c.ok]} {c.name}: {c.detail}" + (f"\n     fix: {c.fix}" if c.ok is not True and c.fix else ""))
    # SKIP (could not check, e.g. no Service Quotas API) is not a failure
    raise typer.Exit(0 if all(c.ok is not False for c in checks) else 1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
