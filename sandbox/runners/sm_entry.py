"""Entry point inside a SageMaker training job (it runs in the training image: STDLIB ONLY, but for
boto3 in the stop watcher).

The PyTorch image's toolkit unpacks our source tarball and runs this file. It reads
manifest.json, links the data/tokenizer channels where prepare.py looks for them
(<AUTORESEARCH_CACHE>/<preset>/{data,tokenizer}), then runs each candidate's own harness.py:
one after another, or one per GPU at a time on a multi-GPU instance. Every harness writes its
result.json under /opt/ml/output/data/<execution_id>/, which SageMaker uploads as output.tar.gz.

Each harness runs as `python -I harness.py` (nothing in a candidate's folder can shadow a module)
with `--stop-file`: when the file named by the manifest's `stop_file` for that candidate (default
$AUTORESEARCH_STOP_DIR/<execution_id>.json, /opt/ml/input/stop by default) appears, the harness
stops that candidate early (status stopped_early) and the others carry on. The runner asks for
that by writing the candidate's marker to S3 (the manifest's `stop_uri`): a watcher thread here
polls it with the job's own credentials (boto3 ships in the training image; it is imported only
for this) and copies it to the stop file. Under network isolation S3 cannot be reached, so the
manifest gives a watched candidate its `stop_rule` instead (the early-stop rule's settings and the
incumbent's reference curves at submission) and JobStopRule here applies the rule to the
candidate's progress lines as they come (the rule and the progress parser are packed beside this
file: sandbox/early_stop_rule.py, sandbox/progress.py).

Each output line is prefixed with `[<execution_id>] ` so the runner can tell candidates apart in
the shared CloudWatch stream, and each result is also printed once as
`AUTORESEARCH_RESULT <execution_id> <json>` (a fallback when a failed job uploads no output).
The toolkit forwards the script's output in 64 KiB reads (and Docker's log driver splits lines
over 16 KiB), so a long line can reach CloudWatch as several events: a record longer than
RECORD_CHUNK is printed as numbered parts that say their length,
`AUTORESEARCH_RESULT_PART <execution_id> <i>/<n> <length> <text>`, which the runner joins.
Exit status: 0 only when every candidate's status is ok, so a job with a crash ends `Failed`.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
_print_lock = threading.Lock()


def say(execution_id: str, line: str) -> None:
    with _print_lock:
        sys.stdout.write(f"[{execution_id}] {line.rstrip()}\n")
        sys.stdout.flush()


def link_channels(preset: str, cache_root: Path) -> None:
    """prepare.py expects <cache>/<preset>/{data,tokenizer}; the channels arrive elsewhere."""
    target = cache_root / preset
    target.mkdir(parents=True, exist_ok=True)
    for name in ("data", "tokenizer"):
        src = Path(os.environ.get(f"SM_CHANNEL_{name.upper()}", f"/opt/ml/input/data/{name}"))
        dest = target / name
        if src.is_dir() and not dest.exists():
            dest.symlink_to(src, target_is_directory=True)


def count_gpus() -> int:
    value = os.environ.get("SM_NUM_GPUS")
    if value and value.isdigit():
        return int(value)
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
        return sum(1 for line in out.splitlines() if line.startswith("GPU "))
    except (OSError, subprocess.SubprocessError):
        return 0


STOP_POLL_S = 20.0    # how often a candidate's S3 stop marker is looked for


def watch_stop_marker(execution_id: str, stop_uri: str, stop_file: str, done: threading.Event,
                      poll_s: float = STOP_POLL_S) -> None:
    """Copy the runner's stop marker (s3://bucket/key) to the harness's --stop-file once it exists;
    end when the candidate ends. Only S3 reads: what the job's role may do anyway."""
    try:
        import boto3
        from botocore.config import Config
        bucket, _, key = stop_uri[len("s3://"):].partition("/")
        s3 = boto3.client("s3", config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2}))
    except Exception as exc:   # no boto3 in a custom image: the early stop of one candidate is off
        say(execution_id, f"sm_entry: early stop unavailable for this candidate ({exc!r})")
        return
    while not done.wait(poll_s):
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            if hasattr(exc, "response"):
                # not asked to stop (yet): NoSuchKey, or AccessDenied, which S3 answers for a missing
                # key to a role without an unconditional s3:ListBucket (ours lists by prefix only)
                continue
            say(execution_id, f"sm_entry: cannot read the stop marker {stop_uri} ({type(exc).__name__}: "
                              f"{str(exc)[:200]}); early stop unavailable for this candidate (network isolation?)")
            return
        hand_to_harness(stop_file, body)
        say(execution_id, "sm_entry: stop marker received; the harness stops this candidate")
        return


def hand_to_harness(stop_file: str, body: bytes) -> None:
    tmp = Path(stop_file + ".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(body)
    os.replace(tmp, stop_file)    # whole or absent: the harness never reads half a marker


class JobStopRule:
    """The early-stop rule for a candidate no marker can reach: the manifest's `stop_rule`
    ({"settings", "references", "incumbent"}, as the orchestrator had them at submission) judged
    on each of the candidate's progress lines; a stop goes to the harness's stop file with the
    figures that decided, as a marker would, and `decided_in: job`."""

    def __init__(self, execution_id: str, rule: dict, stop_file: str):
        from sandbox.early_stop_rule import RuleSettings, decide   # packed beside this file
        from sandbox.progress import parse_progress_line
        self._decide, self._parse = decide, parse_progress_line
        self.execution_id, self.stop_file = execution_id, stop_file
        self.settings = RuleSettings.from_dict(rule["settings"])
        self.references, self.incumbent = rule["references"], rule.get("incumbent")
        self.curve: list[list[float]] = []
        self.stopped = False

    @classmethod
    def for_candidate(cls, cand: dict, stop_file: str) -> "JobStopRule | None":
        if not cand.get("stop_rule"):
            return None
        try:
            return cls(cand["execution_id"], cand["stop_rule"], stop_file)
        except Exception as exc:   # a malformed rule must not cost the candidate its run
            say(cand["execution_id"], f"sm_entry: early stop unavailable for this candidate ({exc!r})")
            return None

    def reading(self, line: str) -> None:
        fields = None if self.stopped else self._parse(line)
        if fields is None:
            return
        self.curve.append([fields["pct"], fields["loss"]])
        if fields["pct"] < self.settings.min_progress:
            return
        decision = self._decide(self.references, self.curve, self.settings)
        if not decision.stop:
            return
        self.stopped = True
        reason = {**decision.as_reason(), "incumbent": self.incumbent, "decided_in": "job"}
        hand_to_harness(self.stop_file, json.dumps(reason).encode())
        say(self.execution_id, f"sm_entry: stopping this candidate early: {decision.reason}")


def run_candidate(cand: dict, preset: str, out_root: Path, gpu: int | None) -> dict:
    execution_id = cand["execution_id"]
    workdir = HERE / cand["dir"]
    out_dir = out_root / execution_id
    out_dir.mkdir(parents=True, exist_ok=True)
    result_path = out_dir / "result.json"
    stop_dir = Path(os.environ.get("AUTORESEARCH_STOP_DIR", "/opt/ml/input/stop"))
    stop_file = cand.get("stop_file") or str(stop_dir / f"{execution_id}.json")
    cmd = [sys.executable, "-I", "harness.py", "--workspace", ".", "--preset", preset, "--result", str(result_path),
           "--stop-file", stop_file]
    if cand.get("timeout_s"):
        cmd += ["--timeout", str(cand["timeout_s"])]
    env = dict(os.environ)
    env.update({k: str(v) for k, v in (cand.get("env") or {}).items()})
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    say(execution_id, f"sm_entry: starting {' '.join(cmd)} (gpu={gpu})")
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")
    done = threading.Event()
    if cand.get("stop_uri"):
        threading.Thread(target=watch_stop_marker, args=(execution_id, cand["stop_uri"], stop_file, done),
                         daemon=True).start()
    rule = JobStopRule.for_candidate(cand, stop_file)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:   # the harness echoes train.py's output line by line
            say(execution_id, line)
            if rule is not None:
                rule.reading(line)
        code = proc.wait()
    finally:
        done.set()
    result = None
    if result_path.is_file():
        try:
            result = json.loads(result_path.read_text())
        except ValueError as exc:
            result = {"status": "crash", "failure_reason": f"harness wrote an unreadable result.json: {exc}"}
    if not isinstance(result, dict) or "status" not in result:
        result = {"status": "crash", "failure_reason": f"harness exited {code} without a result.json"}
    result.setdefault("job_wall_seconds", round(time.time() - started, 1))
    result_path.write_text(json.dumps(result, indent=1))
    if (workdir / "run.log").is_file():
        shutil.copyfile(workdir / "run.log", out_dir / "run.log")
    with _print_lock:
        sys.stdout.write(result_lines(execution_id, json.dumps(result, separators=(',', ':'))))
        sys.stdout.flush()
    return result


RECORD_CHUNK = 8 * 1024    # well under Docker's 16 KiB log lines and the toolkit's 64 KiB reads


def result_lines(execution_id: str, text: str) -> str:
    """The result record as one line, or as numbered parts when it is long (see the docstring)."""
    if len(text) <= RECORD_CHUNK:
        return f"AUTORESEARCH_RESULT {execution_id} {text}\n"
    parts = [text[i:i + RECORD_CHUNK] for i in range(0, len(text), RECORD_CHUNK)]
    return "".join(f"AUTORESEARCH_RESULT_PART {execution_id} {i}/{len(parts)} {len(p)} {p}\n"
                   for i, p in enumerate(parts, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", default=str(HERE / "manifest.json"))
    args, _unknown = parser.parse_known_args(argv)   # the toolkit appends hyperparameters; ignore them
    manifest = json.loads(Path(args.manifest).read_text())
    preset = manifest["preset"]
    link_channels(preset, Path(os.environ.get("AUTORESEARCH_CACHE", "/tmp/autoresearch-cache")))
    out_root = Path(os.environ.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data"))
    candidates = manifest["candidates"]
    gpus = count_gpus()
    workers = max(1, min(gpus, len(candidates))) if gpus > 1 else 1
    todo: queue.Queue = queue.Queue()
    for cand in candidates:
        todo.put(cand)
    results: dict[str, dict] = {}

    def worker(gpu: int | None) -> None:
        while True:
            try:
                cand = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[cand["execution_id"]] = run_candidate(cand, preset, out_root, gpu)
            except Exception as exc:  # a launcher bug must not hide the other candidates' results
                results[cand["execution_id"]] = {"status": "crash", "failure_reason": f"sm_entry: {exc!r}"}

    threads = [threading.Thread(target=worker, args=(i if workers > 1 else None,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = {k: v for k, v in results.items() if v.get("status") != "ok"}
    if bad:
        summary = "; ".join(f"{k}: {v.get('status')}: {str(v.get('failure_reason') or '')[:200]}" for k, v in bad.items())
        failure_file = Path(os.environ.get("SM_OUTPUT_FAILURE", "/opt/ml/output/failure"))
        try:
            failure_file.parent.mkdir(parents=True, exist_ok=True)
            failure_file.write_text(summary[:1000])   # SageMaker shows this as the FailureReason
        except OSError:
            pass
        print(f"sm_entry: {len(bad)} of {len(results)} candidates did not finish ok: {summary}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
