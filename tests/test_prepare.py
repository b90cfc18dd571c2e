"""Tests of prepare.py: presets, sources, atomic cache, tokenizer, dataloader, evaluate_bpb."""
import http.server
import importlib.util
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PREPARE_PY = ROOT / "prepare.py"


def load_prepare(preset="micro", **env):
    """A fresh prepare module whose import-time constants come from this environment."""
    saved = dict(os.environ)
    os.environ["AUTORESEARCH_PRESET"] = preset
    os.environ.pop("AUTORESEARCH_TIME_BUDGET", None)
    os.environ.update(env)
    try:
        name = f"prepare_under_test_{preset}_{len(env)}_{id(env)}"
        spec = importlib.util.spec_from_file_location(name, PREPARE_PY)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        os.environ.clear()
        os.environ.update(saved)


P = load_prepare("micro")


@pytest.fixture(scope="session")
def micro_cache(tmp_path_factory):
    """The micro preset prepared once per session (shared path: test_train.py uses the same one)."""
    root = tmp_path_factory.getbasetemp() / "arc-micro-cache"
    P.prepare("micro", cache_dir=root)
    return root


@pytest.fixture
def micro_env(micro_cache, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(micro_cache))
    return micro_cache


# --- presets and constants ------------------------------------------------------------------

def test_preset_constants():
    assert (P.PRESET, P.MAX_SEQ_LEN, P.VOCAB_SIZE) == ("micro", 64, 512)
    assert P.TIME_BUDGET <= 5
    gpu = load_prepare("gpu")
    assert (gpu.PRESET, gpu.MAX_SEQ_LEN, gpu.TIME_BUDGET, gpu.EVAL_TOKENS, gpu.VOCAB_SIZE) == (
        "gpu", 2048, 300, 40 * 524288, 8192)
    assert gpu.PRESETS["gpu"]["source"] == "climbmix"
    cpu = load_prepare("cpu")
    assert cpu.MAX_SEQ_LEN == 256 and cpu.VOCAB_SIZE == 2048 and cpu.PRESETS["cpu"]["source"] == "stdlib"
    auto = load_prepare("auto")
    assert auto.PRESET == ("gpu" if torch.cuda.is_available() else "cpu")


def test_time_budget_override():
    assert load_prepare("micro", AUTORESEARCH_TIME_BUDGET="2.5").TIME_BUDGET == 2.5
    assert load_prepare("cpu", AUTORESEARCH_TIME_BUDGET="7").TIME_BUDGET == 7
    with pytest.raises(ValueError, match="AUTORESEARCH_TIME_BUDGET"):
        load_prepare("micro", AUTORESEARCH_TIME_BUDGET="soon")


def test_unknown_preset_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError) as e:
        P.resolve_preset("huge")
    assert "huge" in str(e.value) and "gpu, cpu, micro, auto" in str(e.value)
    with pytest.raises(ValueError, match="gpu, cpu, micro, auto"):
        load_prepare("huge")
    r = subprocess.run([sys.executable, str(PREPARE_PY), "--preset", "huge"], capture_output=True, text=True,
                       env=dict(os.environ, AUTORESEARCH_CACHE=str(tmp_path)))
    assert r.returncode != 0 and "gpu, cpu, micro, auto" in r.stderr


def test_unknown_source_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError) as e:
        P.prepare("micro", source="wikipedia", cache_dir=tmp_path)
    assert "climbmix, stdlib" in str(e.value) and "folder" in str(e.value)


# --- cache layout, idempotence, atomicity -------------------------------------------------------

def test_layout_and_idempotent(micro_cache):
    d = micro_cache / "micro"
    assert sorted(p.name for p in (d / "tokenizer").iterdir()) == ["meta.json", "token_bytes.pt", "tokenizer.pkl"]
    manifest = json.loads((d / "data" / "manifest.json").read_text())
    assert manifest["source"] == "stdlib" and manifest["val"] == "shard_val.parquet"
    assert len(manifest["train"]) == 2 and manifest["num_train_docs"] > 1000 and manifest["num_val_docs"] > 100
    info = P.prepare("micro", cache_dir=micro_cache)
    assert info["data"] == "cached" and info["tokenizer"] == "cached"
    assert info["data_dir"] == str(d / "data") and info["vocab_size"] == 512
    assert P.cache_dir_for("micro", micro_cache) == d


def test_cache_dir_for_uses_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path))
    assert P.cache_dir_for("cpu") == tmp_path / "cpu"
    assert P.cache_dir_for() == tmp_path / "micro"
    monkeypatch.delenv("AUTORESEARCH_CACHE")
    assert P.cache_dir_for("micro") == Path("~/.cache/autoresearch/micro").expanduser()


def test_split_is_seeded_and_deterministic(micro_cache, tmp_path):
    import pyarrow.parquet as pq
    P.prepare("micro", cache_dir=tmp_path)
    a, b = micro_cache / "micro" / "data", tmp_path / "micro" / "data"
    ma, mb = (json.loads((x / "manifest.json").read_text()) for x in (a, b))
    assert ma == mb
    for name in ma["train"] + [ma["val"]]:
        assert pq.read_table(a / name).column("text").to_pylist() == pq.read_table(b / name).column("text").to_pylist()
    val = set(pq.read_table(a / ma["val"]).column("text").to_pylist())
    train = set(pq.read_table(a / ma["train"][0]).column("text").to_pylist())
    assert len(val & train) < 0.01 * len(val)  # files never straddle the split (only boilerplate repeats)


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    P.atomic_write_json(target, {"a": 1})

    def boom(*args):
        raise OSError("disk full")
    monkeypatch.setattr(P.os, "replace", boom)
    with pytest.raises(OSError):
        P.atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left behind


def test_leftover_tmp_files_are_not_trusted(micro_cache, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    shutil.copytree(micro_cache, root)
    d = root / "micro"
    # a crash while writing the tokenizer and the manifest: only temp files exist
    (d / "tokenizer" / "tokenizer.pkl").rename(d / "tokenizer" / ".tokenizer.pkl.123.1.tmp")
    (d / "data" / "manifest.json").rename(d / "data" / ".manifest.json.123.2.tmp")
    (d / "data" / ".shard_00000.parquet.123.3.tmp").write_bytes(b"half a shard")
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(root))
    with pytest.raises(FileNotFoundError, match="autoresearch prepare --preset micro"):
        P.Tokenizer.from_directory()
    with pytest.raises(FileNotFoundError, match="autoresearch prepare --preset micro"):
        P._split_paths("train")
    info = P.prepare("micro")
    assert info["data"] == "created" and info["tokenizer"] == "trained"
    assert not list(d.rglob("*.tmp"))
    tok = P.Tokenizer.from_directory()
    assert tok.get_vocab_size() == 512
    next(P.make_dataloader(tok, 2, 64, "train"))


def test_missing_data_message_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        P.Tokenizer.from_directory()
    msg = str(e.value)
    assert "autoresearch prepare --preset micro" in msg and "python prepare.py --preset micro" in msg
    assert f"AUTORESEARCH_CACHE={tmp_path}" in msg
    with pytest.raises(FileNotFoundError, match="python prepare.py --preset micro"):
        P._split_paths("val")


def test_cli(micro_cache):
    r = subprocess.run([sys.executable, str(PREPARE_PY), "--preset", "micro", "--cache-dir", str(micro_cache)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "preset micro" in r.stdout and "cached" in r.stdout


def test_folder_source(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    folder = tmp_path / "mine"
    folder.mkdir()
    texts = [p.read_text() for p in sorted(Path(json.__file__).parent.glob("*.py"))]
    texts += [p.read_text() for p in sorted(Path(http.server.__file__).parent.glob("*.py"))]
    (folder / "a.txt").write_text("\n\n".join(texts[:3]))
    pq.write_table(pa.table({"text": texts[3:]}), folder / "b.parquet")
    (folder / "ignored.bin").write_bytes(b"\0\1")
    info = P.prepare("micro", source=str(folder), num_shards=1, cache_dir=tmp_path / "cache")
    assert info["source"] == str(folder.resolve()) and info["train_shards"] == 1
    assert info["num_train_docs"] > 0 and info["num_val_docs"] > 0 and 256 < info["vocab_size"] <= 512
    with pytest.raises(ValueError, match="no .txt or .parquet"):
        empty = tmp_path / "empty"
        empty.mkdir()
        P.prepare("micro", source=str(empty), cache_dir=tmp_path / "cache2")


# --- tokenizer ------------------------------------------------------------------------------

def test_tokenizer(micro_env):
    tok = P.Tokenizer.from_directory()
    assert tok.get_vocab_size() == 512 and tok.get_bos_token_id() == 508
    text = "def f(x):\n    return x + 12345  # héllo\n"
    ids = tok.encode(text)
    assert tok.decode(ids) == text and 508 not in ids
    assert tok.encode(text, prepend="<|reserved_0|>")[0] == 508
    assert tok.encode(["a b", "c"], prepend=tok.get_bos_token_id()) == [[508] + tok.encode("a b"), [508] + tok.encode("c")]
    assert tok.decode(tok.encode("12345")) == "12345" and len(tok.encode("12345")) >= 3  # \p{N}{1,2}
    tb = P.get_token_bytes()
    assert tb.shape == (512,) and tb[508:].tolist() == [0, 0, 0, 0] and bool((tb[:508] > 0).all())
    assert tb[:256].tolist() == [1] * 256


# --- dataloader -----------------------------------------------------------------------------

def test_dataloader_rows_start_with_bos_and_pack_whole_documents(micro_env):
    import pyarrow.parquet as pq
    tok = P.Tokenizer.from_directory()
    bos = tok.get_bos_token_id()
    manifest = json.loads((micro_env / "micro" / "data" / "manifest.json").read_text())
    docs = pq.read_table(micro_env / "micro" / "data" / manifest["train"][0]).column("text").to_pylist()
    encoded = {tuple(ids[:3]): [] for ids in tok.encode(docs, prepend=bos)}
    for ids in tok.encode(docs, prepend=bos):
        encoded[tuple(ids[:3])].append(ids)
    B, T = 4, 64
    loader = P.make_dataloader(tok, B, T, "train")
    for _ in range(5):
        x, y, epoch = next(loader)
        assert x.shape == (B, T) and y.shape == (B, T) and x.dtype == torch.long and epoch == 1
        assert torch.equal(x[:, 1:], y[:, :-1])
        rows = torch.cat([x, y[:, -1:]], dim=1)
        assert bool((rows[:, 0] == bos).all())
        assert bool(((rows >= 0) & (rows < 512)).all())
        for row in rows.tolist():
            starts = [i for i, t in enumerate(row) if t == bos] + [len(row)]
            for k, (s, e) in enumerate(zip(starts, starts[1:])):
                seg = row[s:e]
                candidates = encoded.get(tuple(seg[:3]), [])
                last = k == len(starts) - 2
                # every segment is a whole document, except the last one of a row (may be cropped)
                assert any(c == seg or (last and c[:len(seg)] == seg) for c in candidates), (k, seg[:10])


def test_make_dataloader_serves_the_training_split_only(micro_env):
    tok = P.Tokenizer.from_directory()
    for split in ("val", "test"):
        with pytest.raises(ValueError, match="training split only"):
            next(P.make_dataloader(tok, 2, 64, split))
    loader = P.make_dataloader(tok, 64, 64, "train", buffer_size=8)
    epochs = [next(loader)[2] for _ in range(400)]
    assert epochs[0] == 1 and epochs[-1] >= 2 and epochs == sorted(epochs)


def test_val_rows_are_deterministic_and_cached_by_prepare(micro_env):
    data, tok_dir = micro_env / "micro" / "data", micro_env / "micro" / "tokenizer"
    rows, source = P.load_val_rows(data / "shard_val.parquet", tok_dir, "micro")
    assert source == "file" and (data / P.VAL_ROWS).is_file()        # prepare() wrote them
    assert rows.shape == (P.EVAL_TOKENS // 64, 65) and rows.dtype == torch.int64
    assert bool((rows[:, 0] == 508).all())                            # every row starts with BOS
    fresh = torch.from_numpy(P.build_val_rows(data / "shard_val.parquet", tok_dir, "micro").astype("int64"))
    assert torch.equal(rows, fresh)                                   # the file is what tokenizing gives
    (data / P.VAL_ROWS_META).write_text("{}")                          # a stale file is not trusted
    try:
        again, source = P.load_val_rows(data / "shard_val.parquet", tok_dir, "micro")
        assert source == "tokenized" and torch.equal(again, rows)
    finally:
        P.prepare("micro", cache_dir=micro_env)
    assert P.prepare("micro", cache_dir=micro_env)["val_rows"] == "cached"


# --- the budget clock -----------------------------------------------------------------------

def test_training_clock_counts_cpu_time_from_interpreter_start():
    clock = P.TrainingClock()
    assert clock.kind == "cpu" and clock.budget == P.TIME_BUDGET
    allowance = P.PRESETS["micro"]["startup_allowance"]

    def cpu():   # this process's threads and the children it waited for
        t = os.times()
        return time.process_time() + t.children_user + t.children_system

    before = cpu()
    seconds = clock.seconds
    assert before - allowance - 0.01 <= seconds <= cpu() - allowance + 0.01
    steps = clock.steps
    t = time.process_time()
    while time.process_time() - t < 0.05:    # CPU work moves the clock ...
        pass
    progress = clock.tick()
    assert clock.steps == steps + 1 and 0.0 <= progress <= 1.0
    assert clock.seconds - seconds >= 0.05
    t = time.process_time()
    time.sleep(0.2)                          # ... sleeping does not (CPU presets)
    assert clock.seconds - seconds < 0.05 + (time.process_time() - t) + 0.1
    assert clock.done == (clock.seconds >= P.TIME_BUDGET)
    assert P.TrainingClock().steps == clock.steps   # one count per process


# --- evaluate_bpb ---------------------------------------------------------------------------

def fresh_prepare():
    """evaluate_bpb may run once per process (per module): each test takes a fresh module."""
    return load_prepare("micro")


class UniformModel(torch.nn.Module):
    """Predicts the uniform distribution: cross-entropy is ln(V) for every token."""

    def __init__(self, vocab=512):
        super().__init__()
        self.vocab = vocab
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.zeros(*x.shape, self.vocab) + self.w


class TinyLM(torch.nn.Module):
    """An honest causal model: embedding, causal mean of the prefix, head."""

    def __init__(self, vocab=512, dim=16):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, dim)
        self.head = torch.nn.Linear(dim, vocab)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        h = self.emb(x).cumsum(1) / torch.arange(1, x.size(1) + 1).view(1, -1, 1)
        return self.head(self.drop(h))


def test_evaluate_bpb_scores_the_logits_itself(micro_env):
    p = fresh_prepare()
    bpb = p.evaluate_bpb(UniformModel(), p.Tokenizer.from_directory(), 8)
    # recompute independently: counted tokens (bytes > 0) each cost ln(512) nats
    rows, _ = p.load_val_rows(micro_env / "micro" / "data" / "shard_val.parquet",
                              micro_env / "micro" / "tokenizer", "micro")
    assert rows.shape[0] * 64 == p.EVAL_TOKENS
    b = p.get_token_bytes()[rows[:, 1:].reshape(-1)]
    counted, nbytes = int((b > 0).sum()), int(b.sum())
    assert bpb == pytest.approx(counted * math.log(512) / (math.log(2) * nbytes), rel=1e-6)


@pytest.mark.parametrize("batch_size", [1, 3, 8, 512, 10_000])
def test_evaluate_bpb_covers_eval_tokens_whatever_the_batch_size(micro_env, batch_size):
    reference = fresh_prepare().evaluate_bpb(TinyLM(), None, 8)
    assert fresh_prepare().evaluate_bpb(TinyLM(), None, batch_size) == pytest.approx(reference, rel=1e-5)


def test_evaluate_bpb_puts_the_model_in_eval_mode_itself(micro_env):
    """Dropout is off during the evaluation even when the class overrides train()/eval()."""
    class Stubborn(TinyLM):
        def train(self, mode=True):
            return self

        def eval(self):
            return self

    model = Stubborn()
    model.train()
    assert model.training and model.drop.training
    reference = fresh_prepare().evaluate_bpb(TinyLM().eval(), None, 8)
    assert fresh_prepare().evaluate_bpb(model, None, 8) == pytest.approx(reference, rel=1e-6)


def test_evaluate_bpb_runs_once_per_process(micro_env):
    p = fresh_prepare()
    p.evaluate_bpb(UniformModel(), None, 8)
    with pytest.raises(p.IntegrityError, match="evaluation: evaluate_bpb was called 2 times"):
        p.evaluate_bpb(UniformModel(), None, 8)


class Peeking(TinyLM):
    """Adds a little of the next token's embedding at every position: a one-token look-ahead."""

    def __init__(self, every=1, after_calls=0):
        super().__init__()
        self.every, self.after_calls, self.calls = every, after_calls, 0

    def forward(self, x):
        self.calls += 1
        logits = super().forward(x)
        if self.calls > self.after_calls:
            nxt = torch.nn.functional.one_hot(x.roll(-1, 1), logits.size(-1)).float()
            mask = torch.zeros(x.size(1))
            mask[::self.every] = 1
            logits = logits + 0.5 * nxt * mask.view(1, -1, 1)
        return logits


@pytest.mark.parametrize("every,after_calls", [(1, 0), (16, 0), (64, 0), (1, 2)])
def test_causality_probe_names_the_leaking_position(micro_env, every, after_calls):
    """Every position is tested (sparse leaks too). A model that starts leaking later in the
    evaluation changes its answer for the first batch too (statelessness) - whichever the
    randomly placed probes meet first."""
    p = fresh_prepare()
    with pytest.raises(p.IntegrityError) as e:
        p.evaluate_bpb(Peeking(every, after_calls).eval(), None, 8)
    if after_calls:
        assert re.search(r"causality: the logits at position|statelessness: the first evaluation batch", str(e.value))
    else:
        m = re.search(r"causality: the logits at position (\d+) of row \d+ moved by", str(e.value))
        assert m and int(m.group(1)) % every == 0, str(e.value)


def test_causality_probe_catches_rows_that_see_each_other(micro_env):
    class BatchMixer(TinyLM):
        def forward(self, x):
            logits = super().forward(x)
            return logits + 0.1 * logits.mean(0, keepdim=True).detach()   # batch statistics

    p = fresh_prepare()
    with pytest.raises(p.IntegrityError, match="causality"):
        p.evaluate_bpb(BatchMixer().eval(), None, 8)


def test_a_model_that_edits_its_earlier_outputs_is_still_caught(micro_env):
    """It keeps the logits it returned and overwrites them with each new answer, so that a probe
    compared against them would see no change: prepare keeps its own copy."""
    class Rewriter(Peeking):
        kept = None

        def forward(self, x):
            out = super().forward(x)
            if self.kept is not None and self.kept.shape == out.shape:
                self.kept.copy_(out)
            self.kept = out
            return out

    p = fresh_prepare()
    with pytest.raises(p.IntegrityError, match="causality"):
        p.evaluate_bpb(Rewriter().eval(), None, 8)


def test_statelessness_probe_catches_a_model_that_learns_while_evaluated(micro_env):
    class Learner(TinyLM):
        def forward(self, x):
            with torch.inference_mode(False), torch.enable_grad():
                h = self.emb.weight.clone()
            self.head.bias.add_(0.01)          # "training" on what it sees
            return super().forward(x)

    p = fresh_prepare()
    with pytest.raises(p.IntegrityError, match="statelessness"):
        p.evaluate_bpb(Learner().eval(), None, 8)


def test_statelessness_probe_catches_hidden_state(micro_env):
    """Improves its answers as it goes through a plain attribute (not a parameter or buffer):
    the first batch, scored again, differs."""
    class Drifting(TinyLM):
        calls = 0

        def forward(self, x):
            self.calls += 1
            return super().forward(x) * (1 + 0.01 * self.calls)

    p = fresh_prepare()
    with pytest.raises(p.IntegrityError, match="statelessness: the first evaluation batch scored"):
        p.evaluate_bpb(Drifting().eval(), None, 8)


def test_a_parameter_subclass_cannot_fake_its_fingerprint(micro_env):
    """A parameter whose clone()/detach() return a frozen copy, on a model that learns while it is
    evaluated: the fingerprint goes through the C base class."""
    class Frozen(torch.nn.Parameter):
        def clone(self, *args, **kwargs):
            return self._frozen

        def detach(self):
            return self._frozen

    class Sly(TinyLM):
        def __init__(self):
            super().__init__()
            weight = Frozen(self.head.bias.data.clone())
            weight._frozen = weight.data.clone()
            self.head.bias = weight

        def forward(self, x):
            self.head.bias.data += 0.01     # a uniform shift: the predictions do not move, the state does
            return super().forward(x)

    p = fresh_prepare()
    with pytest.raises(p.IntegrityError, match="statelessness: head.bias changed during the evaluation"):
        p.evaluate_bpb(Sly().eval(), None, 8)


def test_logits_must_be_a_plain_tensor_of_the_right_shape(micro_env):
    class Sneaky(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            return super().__torch_function__(func, types, args, kwargs or {})

    class SubclassModel(TinyLM):
        def forward(self, x):
            return super().forward(x).as_subclass(Sneaky)

    class WrongShape(TinyLM):
        def forward(self, x):
            return super().forward(x)[:, :-1]

    p = fresh_prepare()
    with pytest.raises(p.IntegrityError, match="logits: the model returned a .*Sneaky, not a plain torch.Tensor"):
        p.evaluate_bpb(SubclassModel().eval(), None, 8)
    p = fresh_prepare()
    with pytest.raises(p.IntegrityError, match=r"logits: .*shape \(8, 63, 512\); expected .*\(8, 64, 512\)"):
        p.evaluate_bpb(WrongShape().eval(), None, 8)
    p = fresh_prepare()
    with pytest.raises(p.IntegrityError, match="needs a torch.nn.Module"):
        p.evaluate_bpb(lambda x: torch.zeros(*x.shape, 512), None, 8)


def test_monkeypatched_torch_is_refused(micro_env, monkeypatch):
    p = fresh_prepare()
    monkeypatch.setattr(torch.Tensor, "logsumexp", lambda self, dim: torch.zeros(self.shape[:-1]))
    # logsumexp is inherited from the C base class: patching it adds a name to torch.Tensor
    with pytest.raises(p.IntegrityError, match="monkeypatch: torch.Tensor gained logsumexp after prepare"):
        p.evaluate_bpb(TinyLM().eval(), None, 8)


def test_a_replaced_tensor_method_is_refused(micro_env, monkeypatch):
    p = fresh_prepare()
    monkeypatch.setattr(torch.Tensor, "__rsub__", lambda self, other: other - self.detach())
    with pytest.raises(p.IntegrityError, match="monkeypatch: torch.Tensor.__rsub__ was replaced"):
        p.evaluate_bpb(TinyLM().eval(), None, 8)


@pytest.mark.parametrize("target,name", [("prepare", "EVAL_TOKENS"), ("prepare", "math"), ("math", "log"),
                                         ("builtins", "sum"), ("torch", "float64")])
def test_rebinding_what_prepare_computes_with_is_refused(micro_env, monkeypatch, target, name):
    import builtins
    import types
    p = fresh_prepare()
    log, total = math.log, builtins.sum
    owner, replacement = {
        ("prepare", "EVAL_TOKENS"): (p, 1024),
        ("prepare", "math"): (p, types.SimpleNamespace(log=lambda x: 4 * log(x))),
        ("math", "log"): (math, lambda x, *base: 4 * log(x, *base)),
        ("builtins", "sum"): (builtins, lambda *a, **k: total(*a, **k)),
        ("torch", "float64"): (torch, torch.float32),
    }[target, name]
    monkeypatch.setattr(owner, name, replacement)
    with pytest.raises(p.IntegrityError, match=rf"monkeypatch: {target}.{name} was replaced after prepare"):
        p.evaluate_bpb(TinyLM().eval(), None, 8)


def test_an_active_torch_function_mode_is_refused(micro_env):
    from torch.overrides import TorchFunctionMode

    class Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    p = fresh_prepare()
    with Mode(), pytest.raises(p.IntegrityError, match="torch function/dispatch mode is active"):
        p.evaluate_bpb(TinyLM().eval(), None, 8)


# --- climbmix download (against a local HTTP server; nothing reaches the internet) ------------

class _RangeHandler(http.server.BaseHTTPRequestHandler):
    files = {}
    fail_first = set()
    requests = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        self.requests.append((name, self.headers.get("Range")))
        if name in self.fail_first:
            self.fail_first.discard(name)
            self.send_error(503)
            return
        data = self.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def shard_server():
    import pyarrow as pa
    import pyarrow.parquet as pq
    files = {}
    for name in ("shard_00000.parquet", P.CLIMBMIX_VAL_SHARD):
        buf = io.BytesIO()
        pq.write_table(pa.table({"text": [f"{name} document {i}" for i in range(500)]}), buf)
        files[name] = buf.getvalue()
    _RangeHandler.files, _RangeHandler.fail_first, _RangeHandler.requests = files, set(), []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", files
    server.shutdown()
    server.server_close()


def test_climbmix_download_resumes_and_retries(shard_server, tmp_path, monkeypatch):
    url, files = shard_server
    monkeypatch.setattr(P.time, "sleep", lambda s: None)
    monkeypatch.setenv("AUTORESEARCH_CLIMBMIX_URL", url)
    data = files["shard_00000.parquet"]
    (tmp_path / "shard_00000.parquet.part").write_bytes(data[:1000])  # an interrupted download
    _RangeHandler.fail_first = {P.CLIMBMIX_VAL_SHARD}  # a transient server error
    info = P._download_climbmix(tmp_path, 1)
    assert info["train"] == ["shard_00000.parquet"] and info["val"] == "shard_06542.parquet"
    assert (tmp_path / "shard_00000.parquet").read_bytes() == data
    assert (tmp_path / "shard_06542.parquet").read_bytes() == files["shard_06542.parquet"]
    assert ("shard_00000.parquet", "bytes=1000-") in _RangeHandler.requests
    assert not list(tmp_path.glob("*.part"))
    _RangeHandler.requests.clear()
    P._download_climbmix(tmp_path, 1)  # idempotent: nothing fetched again
    assert _RangeHandler.requests == []


def test_climbmix_download_gives_up_with_a_clear_error(shard_server, tmp_path, monkeypatch):
    url, _ = shard_server
    monkeypatch.setattr(P.time, "sleep", lambda s: None)
    with pytest.raises(RuntimeError, match="could not download"):
        P._download(f"{url}/missing.parquet", tmp_path / "missing.parquet", retries=2)
    assert not (tmp_path / "missing.parquet").exists()
