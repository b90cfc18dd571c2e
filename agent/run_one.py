"""`autoresearch run-one` and `autoresearch prepare`: one train.py through the real path, and data.

run-one builds a candidate workspace and runs it through the LocalRunner - exactly what autopilot
does for each candidate (one slot, one compute thread pinned to one core on CPU, the sandboxed
harness) - so a result from run-one means the same as one from a generation.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from types import ModuleType

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sandbox.runners.base import ExecutionSpec, Finished, Progress
from sandbox.runners.local import LocalRunner
from sandbox.workspace import build_workspace


class RunOneError(RuntimeError):
    """run-one / prepare cannot start; the message says what to do."""


def load_prepare_module(project_dir: Path, preset: str | None = None) -> ModuleType:
    """Import the project's prepare.py from its file, fresh each call: its constants are chosen at
    import time from AUTORESEARCH_PRESET, which is set to `preset` for the import only. Neither
    the environment nor sys.modules["prepare"] is left changed."""
    path = Path(project_dir).resolve() / "prepare.py"
    if not path.is_file():
        raise RunOneError(f"{path} not found: run this from the project root (where prepare.py is)")
    spec = importlib.util.spec_from_file_location("prepare", path)
    module = importlib.util.module_from_spec(spec)
    saved_env = os.environ.get("AUTORESEARCH_PRESET")
    saved_module = sys.modules.get("prepare")
    if preset:
        os.environ["AUTORESEARCH_PRESET"] = preset
    sys.modules["prepare"] = module  # the module's own import-time lookups (pickle, dataclasses)
    try:
        spec.loader.exec_module(module)
    except ValueError as exc:  # bad preset / budget in the environment
        raise RunOneError(f"{path}: {exc}") from None
    finally:
        if saved_env is None:
            os.environ.pop("AUTORESEARCH_PRESET", None)
        else:
            os.environ["AUTORESEARCH_PRESET"] = saved_env
        if saved_module is None:
            sys.modules.pop("prepare", None)
        else:
            sys.modules["prepare"] = saved_module
    return module


def check_prepared(prepare: ModuleType, preset: str) -> Path:
    """The cache folder of `preset`, or a RunOneError saying how to prepare it."""
    root = prepare.cache_dir_for(preset)
    missing = [p for p in (root / "data" / "manifest.json", root / "tokenizer" / "tokenizer.pkl")
               if not p.is_file()]
    if missing:
        raise RunOneError(f"the {preset} preset's data is missing ({missing[0]} not found): "
                          f"run `autoresearch prepare --preset {preset}` first")
    return root


def prepare_data(preset: str, source: str | None = None, num_shards: int | None = None,
                 upload: bool = False, project_dir: Path | None = None, settings=None,
                 console: Console | None = None) -> dict:
    """Prepare data + tokenizer of `preset` with the project's own prepare.py; optionally upload
    them for SageMaker through agent.aws_setup.upload_prepared(preset[, settings=settings])."""
    prepare = load_prepare_module(project_dir or Path.cwd(), preset)
    try:
        info = prepare.prepare(preset, source=source, num_shards=num_shards)
    except (ValueError, FileNotFoundError) as exc:
        raise RunOneError(f"prepare --preset {preset}: {exc}") from None
    console = console or Console()
    console.print(f"preset [bold]{info['preset']}[/]: source {info['source']}, data {info['data']} "
                  f"({info['train_shards']} train shard(s) + {info['val_shard']}) in {info['data_dir']}; "
                  f"tokenizer {info['tokenizer']} (vocab {info['vocab_size']}) in {info['tokenizer_dir']}; "
                  f"{info['seconds']:.1f}s")
    if upload:
        from agent.aws_setup import upload_prepared
        if settings is None:
            raise RunOneError("prepare --upload needs the AWS settings (s3.bucket) from config.yaml")
        info["upload"] = upload_prepared(settings, info["preset"])
        for line in info["upload"]:
            console.print(line)
    return info


def _progress_text(label: str, p: Progress | None, started: float) -> Text:
    elapsed = time.monotonic() - started
    if p is None:
        return Text(f"{label}: starting ... {elapsed:5.1f}s", style="dim")
    parts = [f"{label}: step {p.step:>5} ({p.pct:5.1f}%)", f"loss {p.loss:.4f}",
             f"{p.tok_per_s:,.0f} tok/s"]
    if p.mfu is not None:
        parts.append(f"mfu {p.mfu:.1f}%")
    if p.remaining_s is not None:
        parts.append(f"remaining {p.remaining_s:.0f}s")
    parts.append(f"elapsed {elapsed:.0f}s")
    return Text(" | ".join(parts))


def summary_table(result: dict, title: str) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    status = result.get("status")
    table.add_row("status", Text(str(status), style="green" if status == "ok" else "red bold"))
    if result.get("failure_reason"):
        table.add_row("reason", str(result["failure_reason"]))
    for key, fmt in (("val_bpb", "{:.6f}"), ("training_seconds", "{:.1f}"), ("total_seconds", "{:.1f}"),
                     ("wall_seconds", "{:.1f}"), ("num_steps", "{}"), ("total_tokens_M", "{:.1f}"),
                     ("num_params_M", "{:.1f}"), ("depth", "{}"), ("mfu_percent", "{:.2f}"),
                     ("peak_vram_mb", "{:.1f}"), ("preset", "{}"), ("clock", "{}"),
                     ("measurement_version", "{}")):
        if result.get(key) is not None:
            table.add_row(key, fmt.format(result[key]))
    sandbox = (result.get("integrity") or {}).get("sandbox") or {}
    if sandbox:
        missing = "; ".join(sandbox.get("unavailable") or [])
        table.add_row("sandbox", f"{sandbox.get('level')}" + (f" (unavailable: {missing})" if missing else ""))
    return table


def run_one(path: Path = Path("train.py"), preset: str = "auto", project_dir: Path | None = None,
            runs_dir: str | Path = "runs", threads: int = 0, timeout_s: float | None = None,
            startup_allowance_s: float = 120.0, console: Console | None = None) -> dict:
    """Train one train.py through a workspace and the LocalRunner; print a live progress line and
    a summary table; return the result.json dict (with `result_path` added)."""
    console = console or Console()
    project_dir = Path(project_dir or Path.cwd()).resolve()
    path = Path(path)
    if not path.is_absolute():
        path = (Path.cwd() / path).resolve()
    if not path.is_file():
        raise RunOneError(f"{path} not found: give the train.py to run")
    source = path.read_text()
    prepare = load_prepare_module(project_dir, preset)
    resolved = prepare.resolve_preset(preset)
    check_prepared(prepare, resolved)

    short = hashlib.sha256(source.encode()).hexdigest()[:8]
    runs = Path(runs_dir)
    runs = runs if runs.is_absolute() else project_dir / runs
    name = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{short}"
    ws = build_workspace(runs / "run-one" / name, source, project_dir,
                         {"kind": "run-one", "source_path": str(path), "preset": resolved})
    runner = LocalRunner(slots=1, threads_per_slot=threads, startup_allowance_s=startup_allowance_s)
    execution_id = "run-one"
    runner.submit(ExecutionSpec(execution_id=execution_id, workspace=ws, preset=resolved,
                                label=path.name, timeout_s=timeout_s))
    console.print(f"[bold]run-one[/] {path} -> {ws} (preset {resolved}, "
                  f"{runner.threads_per_slot} thread(s){', GPU ' + runner.gpus[0] if runner.gpus else ''})",
                  soft_wrap=True)
    started = time.monotonic()
    latest: Progress | None = None
    finished: Finished | None = None
    try:
        with Live(_progress_text(path.name, None, started), console=console, transient=True,
                  refresh_per_second=4) as live:
            while finished is None:
                for event in runner.poll(timeout=0.5):
                    if isinstance(event, Progress):
                        latest = event
                    elif isinstance(event, Finished):
                        finished = event
                live.update(_progress_text(path.name, latest, started))
    except KeyboardInterrupt:
        done = runner.shutdown("interrupted")
        if done:
            console.print(summary_table(done[0].result, "run-one (interrupted)"))
        raise
    result = dict(finished.result)
    result_path = Path(result.get("log_path") or ws / "run.log").with_name("result.json")
    result["result_path"] = str(result_path)
    console.print(summary_table(result, f"run-one: {path.name}"))
    console.print(f"result: {result_path}", soft_wrap=True)
    return result
