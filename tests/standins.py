"""Stand-ins for the harness's tests: a torch-free prepare.py that speaks the harness's real
protocol (the link the bootstrap hands it, sealed messages), a data cache with the layout the
harness checks, and stand-in train.py scripts whose behaviour is written into the file itself
(the child runs in a fresh scratch folder and sees nothing of the test's folders).

Only the harness's judging is stood in for: the sandbox, the pipes, the key and the clock are
the real ones. The real prepare.py is exercised by tests/test_prepare.py, tests/test_train.py
and the cheat suite (tests/test_runtime_cheats.py).
"""
from __future__ import annotations

import json
from pathlib import Path

from sandbox.workspace import build_workspace

PRESETS_LITERAL = """{
    "gpu": dict(max_seq_len=2048, time_budget=300, eval_tokens=40 * 524288, vocab_size=8192,
                clock="wall", startup_allowance=0, first_forward_allowance=120),
    "cpu": dict(max_seq_len=256, time_budget=45, eval_tokens=2**17, vocab_size=2048,
                clock="cpu", startup_allowance=0, first_forward_allowance=1.0),
    "micro": dict(max_seq_len=64, time_budget=4, eval_tokens=2**15, vocab_size=512,
                  clock="cpu", startup_allowance=0, first_forward_allowance=0.25),
}"""

# For orchestration tests' instant stand-ins (agent tests): a budget of 0 unless
# AUTORESEARCH_TIME_BUDGET says otherwise (they sleep TIME_BUDGET in all), and a start-up allowance
# that no instant stand-in exceeds, so only what they choose to do can make them over budget.
INSTANT_PRESETS_LITERAL = "{\n" + "".join(
    f'    "{name}": dict(max_seq_len=64, time_budget=0, eval_tokens=2**14, vocab_size=512, clock="cpu",\n'
    f'                   startup_allowance=30, first_forward_allowance=0.25),\n'
    for name in ("gpu", "cpu", "micro")) + "}"   # literal: sandbox/presets.py reads it without running it

LINK_HEADER = '''
# --- the harness's side of the contract (tests/standins.py): settings in, a sealed record out ---
_link = globals().pop("__autoresearch_link__", None)
MEASUREMENT_VERSION = 2
PRESETS = @PRESETS@
SETTINGS = dict(_link.settings) if _link else {}
_send = _link.send if _link else None
_wait = _link.wait_go if _link else None
del _link


def report(val_bpb, **fields):
    """What the real evaluate_bpb sends: eval_start (the harness reads the clock meanwhile), then
    the record with the settings echoed; `fields` replace record fields. Returns val_bpb."""
    if _send is None:          # not under the harness
        return val_bpb
    _send("eval_start", {})
    _wait()
    echo = {k: SETTINGS[k] for k in ("preset", "budget", "eval_tokens", "max_seq_len",
                                     "measurement_version", "clock", "startup_allowance", "nonce")}
    echo.update(fields.pop("settings", {}))
    record = dict(settings=echo, val_bpb=val_bpb, total_nats=1.0, total_bytes=2,
                  num_tokens=SETTINGS["eval_tokens"], train_tokens=1000, num_params=500000,
                  peak_memory_mb=1.0, clock=dict(ticks=3, median_step=0.01),
                  probes=dict(causality=dict(worst=0.0), statelessness=dict(rescores=[0.0])), eval={})
    record.update(fields)
    _send("record", record)
    return val_bpb
'''


def linked_prepare(body: str, instant: bool = True) -> str:
    """A stand-in prepare.py: the harness's link and `report(val_bpb)` (see LINK_HEADER), then
    `body` (the stand-in's constants, Tokenizer, make_dataloader, evaluate_bpb calling report)."""
    header = LINK_HEADER.replace("@PRESETS@", INSTANT_PRESETS_LITERAL if instant else PRESETS_LITERAL)
    return '"""Stand-in prepare.py (tests only)."""\n' + header + "\n" + body


STUB_PREPARE = linked_prepare('''
import time
PRESET = SETTINGS.get("preset", "micro")


def evaluate(val_bpb=1.2345671, ticks=3, median_step=0.01, **overrides):
    return report(val_bpb, clock=dict(ticks=ticks, median_step=median_step), **overrides)


def violation(check, message):
    _send("violation", {"check": check, "message": message, "figures": {}})
''', instant=False)

# Prints `steps` progress lines, then does what CFG asks, then reports like train.py.
STANDIN_TRAIN = r'''
import json, math, os, sys, time
from pathlib import Path
HERE = Path(__file__).resolve().parent     # the attempt's scratch folder
def mark(name, value):   # atomically: the tests read the file as soon as it exists
    (HERE / (name + ".tmp")).write_text(str(value))
    os.replace(HERE / (name + ".tmp"), HERE / name)
mark("started", os.getpid())
if CFG.get("dump_env"):
    (HERE / "env_seen.json").write_text(json.dumps(dict(os.environ)))
if CFG.get("spawn_grandchild"):
    import subprocess
    p = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(600)  # {CFG['spawn_grandchild']}"])
    mark("grandchild.pid", p.pid)
import prepare
for i in range(CFG.get("steps", 3)):
    loss = float("nan") if CFG.get("nan_at") == i else 4.0 - 0.1 * i
    print(f"step {i:05d} ({100*(i+1)/CFG.get('steps', 3):.1f}%) | loss: {loss:.6f} | lrm: 1.00 | dt: 10ms | "
          f"tok/sec: 12,345 | mfu: 1.5% | epoch: 1 | remaining: {3-i}s", flush=True)
    time.sleep(CFG.get("step_s", 0))
    if math.isnan(loss):
        print("FAIL", flush=True)
        sys.exit(1)
if CFG.get("burn_cpu"):
    t = time.process_time()
    while time.process_time() - t < CFG["burn_cpu"]:
        pass
if CFG.get("raise"):
    raise RuntimeError(CFG["raise"])
if CFG.get("sleep"):
    mark("sleeping", os.getpid())
    time.sleep(CFG["sleep"])
if CFG.get("violation"):
    prepare.violation(*CFG["violation"])
if CFG.get("record", True):
    prepare.evaluate(CFG.get("record_val", 1.2345671), **CFG.get("record_fields", {}))
if CFG.get("summary", True):
    values = {"val_bpb": "1.234567", "training_seconds": "9.9", "total_seconds": "11.0",
              "peak_vram_mb": "0.0", "mfu_percent": "1.50", "total_tokens_M": "0.1",
              "num_steps": "3", "num_params_M": "0.5", "depth": "2"}
    values.update(CFG.get("values", {}))
    if CFG.get("early_block"):
        print("---\nval_bpb:          9.999999")
    print("---")
    for k, v in values.items():
        if k not in CFG.get("drop", []):
            print(f"{k + ':':<18}{v}")
sys.exit(CFG.get("exit", 0))
'''


def standin_train(**behaviour) -> str:
    return f"CFG = {json.dumps(behaviour)!r}\nimport json as _j; CFG = _j.loads(CFG)\n" + STANDIN_TRAIN


def make_fake_cache(root: Path, presets: tuple[str, ...] = ("micro", "cpu", "gpu")) -> Path:
    """The layout the harness checks before it starts a child (<root>/<preset>/...)."""
    for preset in presets:
        data, tok = root / preset / "data", root / preset / "tokenizer"
        data.mkdir(parents=True, exist_ok=True)
        tok.mkdir(parents=True, exist_ok=True)
        for name in ("shard_00000.parquet", "shard_val.parquet"):
            (data / name).write_bytes(b"not really parquet: the stand-in prepare never reads it\n")
        (data / "manifest.json").write_text(json.dumps({"train": ["shard_00000.parquet"], "val": "shard_val.parquet"}))
        (tok / "tokenizer.pkl").write_bytes(b"stand-in")
        (tok / "token_bytes.pt").write_bytes(b"stand-in")
    return root


def make_project(root: Path) -> Path:
    """A project folder holding the stand-in prepare.py (what build_workspace copies)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "prepare.py").write_text(STUB_PREPARE)
    return root


def standin_workspace(dest: Path, project: Path, **behaviour) -> Path:
    return build_workspace(dest, standin_train(**behaviour), project, {"standin": True})


