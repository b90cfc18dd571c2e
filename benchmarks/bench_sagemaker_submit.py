"""Submit a 100-candidate generation to moto's server on 127.0.0.1 and count AWS API calls.

Figures: wall time to submit every candidate (pack + upload + CreateTrainingJob), API calls per
candidate for submission, for one poll round over all running jobs (Search vs Describe), and for
collecting the results once every job completed. Counted with a botocore `before-call` hook on the
runner's own session, so only the runner's calls are counted. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_sagemaker_submit.py [--candidates 100] [--per-job 1] [--repeats 3]
"""
from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402

from agent.config import Settings  # noqa: E402
from sandbox.runners.base import ExecutionSpec, Finished  # noqa: E402
from sandbox.runners.sagemaker import SageMakerRunner  # noqa: E402
from sandbox.workspace import build_workspace  # noqa: E402
from tests.aws_fixtures import REGION, FakeAWSServer, QuotaStandIn, SageMakerSim, set_job  # noqa: E402

TRAIN = "print('stand-in train.py')\n"


def one_round(server: FakeAWSServer, tmp: Path, n: int, per_job: int) -> dict:
    server.reset()
    # the runner reads the spot quota before its first job; moto has no SageMaker quotas
    QuotaStandIn(server, defaults={"ml.g5.xlarge for spot training job usage": ("L-SPOT", 0.0)},
                 applied={"L-SPOT": float(n)}, filler=0)
    boto3.client("s3", region_name=REGION, endpoint_url=server.url).create_bucket(Bucket="bench")
    settings = Settings.model_validate({
        "aws": {"region": REGION, "role_arn": "arn:aws:iam::123456789012:role/bench"}, "s3": {"bucket": "bench"},
        "sagemaker": {"image_uri": "123.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:bench",
                      "max_concurrent_jobs": n, "candidates_per_job": per_job, "poll_min_s": 0, "poll_max_s": 0}})
    session = boto3.Session(region_name=REGION)
    counts: collections.Counter = collections.Counter()
    session.events.register("before-call.*.*", lambda model, **_: counts.update([model.name]))
    runner = SageMakerRunner(settings, run_tag="bench", run_id="bench", session=session)
    specs = []
    for i in range(n):
        ws = build_workspace(tmp / f"ws{i}", TRAIN, ROOT, {"i": i})
        specs.append(ExecutionSpec(f"e{i:03d}", ws, "micro", tags={"run": "bench", "generation": "1"}))
    t0 = time.perf_counter()
    for spec in specs:
        runner.submit(spec)
    runner.poll(0)   # sends any partly filled pack, and makes the first poll round
    submit_s = time.perf_counter() - t0
    submit_calls = sum(counts.values())
    by_op_submit = dict(counts)
    counts.clear()
    runner.poll(0)
    poll_calls = dict(counts)
    counts.clear()
    sim = SageMakerSim(server, tmp)
    for k in range(0, n, per_job):   # packs are consecutive submissions, named after their first
        name = f"ar-bench-bench-{specs[k].execution_id}-a1"
        set_job(name, status="Completed", secondary="Completed", billable=100, training_time=300)
        sim.put_output(name, {s.execution_id: {"status": "ok", "val_bpb": 1.0} for s in specs[k:k + per_job]})
    t1 = time.perf_counter()
    done: list = []
    while len(done) < n:
        done += [e for e in runner.poll(0) if isinstance(e, Finished)]
    collect_s = time.perf_counter() - t1
    return {"submit_s": submit_s, "submit_calls": submit_calls, "by_op_submit": by_op_submit,
            "poll_calls": poll_calls, "collect_calls": dict(counts), "collect_s": collect_s,
            "jobs": len(sim.job_names()), "ok": sum(e.result["status"] == "ok" for e in done)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--per-job", type=int, nargs="*", default=[1, 4])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    for var in list(os.environ):
        if var.startswith("AWS_"):
            del os.environ[var]
    server = FakeAWSServer()
    server.start()
    os.environ.update({"AWS_ENDPOINT_URL": server.url, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"})
    n = args.candidates
    print(f"{n}-candidate generation -> moto server on {server.url} ({os.cpu_count()} cores), {args.repeats} runs each")
    try:
        for per_job in args.per_job:
            rows = []
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as tmp:
                    rows.append(one_round(server, Path(tmp), n, per_job))
            s = [r["submit_s"] for r in rows]
            last = rows[-1]
            print(f"\ncandidates_per_job={per_job}: {last['jobs']} jobs, {last['ok']}/{n} results ok")
            print(f"  submit all: mean {statistics.mean(s):.2f} s (min {min(s):.2f}, max {max(s):.2f}); "
                  f"{statistics.mean(s) / n * 1000:.1f} ms per candidate")
            print(f"  API calls to submit: {last['submit_calls']} = {last['submit_calls'] / n:.2f} per candidate "
                  f"{last['by_op_submit']}")
            print(f"  one poll round over {last['jobs']} running jobs: {sum(last['poll_calls'].values())} calls "
                  f"{last['poll_calls']}")
            print(f"  collect results: {sum(last['collect_calls'].values())} calls = "
                  f"{sum(last['collect_calls'].values()) / n:.2f} per candidate {last['collect_calls']} "
                  f"in {last['collect_s']:.2f} s")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
