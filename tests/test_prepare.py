"""Tests of prepare.py: presets, sources, atomic cache, tokenizer, dataloader, evaluate_bpb."""
import http.server
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import sys
import threading
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
    monkeypatch.delenv("AUTORESEARCH_EVAL_RECORD", raising=False)
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


def test_dataloader_val_is_deterministic_and_epochs_advance(micro_env):
    tok = P.Tokenizer.from_directory()
    a, b = P.make_dataloader(tok, 2, 64, "val"), P.make_dataloader(tok, 2, 64, "val")
    for _ in range(3):
        xa, ya, _ = next(a)
        xb, yb, _ = next(b)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    loader = P.make_dataloader(tok, 64, 64, "val", buffer_size=8)
    epochs = [next(loader)[2] for _ in range(60)]
    assert epochs[0] == 1 and epochs[-1] >= 2 and epochs == sorted(epochs)
    with pytest.raises(ValueError, match="split"):
        next(P.make_dataloader(tok, 2, 64, "test"))


# --- evaluate_bpb ---------------------------------------------------------------------------

class UniformModel(torch.nn.Module):
    """Predicts the uniform distribution: cross-entropy is ln(V) for every token."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, y, reduction="mean"):
        logits = torch.zeros(*x.shape, self.vocab) + self.w
        return torch.nn.functional.cross_entropy(logits.view(-1, self.vocab), y.reshape(-1), reduction=reduction)


def test_evaluate_bpb_records_what_it_computed(micro_env, tmp_path, monkeypatch):
    record = tmp_path / "sub" / "eval.json"
    record.parent.mkdir()
    monkeypatch.setenv("AUTORESEARCH_EVAL_RECORD", str(record))
    tok = P.Tokenizer.from_directory()
    bpb = P.evaluate_bpb(UniformModel(512), tok, 8)
    rec = json.loads(record.read_text())
    assert rec["val_bpb"] == bpb and math.isfinite(bpb)
    assert rec["num_batches"] == P.EVAL_TOKENS // (8 * 64) and rec["batch_size"] == 8
    assert rec["num_tokens"] == rec["num_batches"] * 8 * 64
    assert rec["preset"] == "micro" and rec["max_seq_len"] == 64 and rec["time_budget"] == P.TIME_BUDGET
    assert rec["eval_seconds"] >= 0
    assert rec["total_nats"] / (math.log(2) * rec["total_bytes"]) == pytest.approx(bpb)
    # recompute independently: counted tokens (bytes > 0) each cost ln(512) nats
    tb = P.get_token_bytes()
    loader = P.make_dataloader(tok, 8, 64, "val")
    counted = nbytes = 0
    for _ in range(rec["num_batches"]):
        _, y, _ = next(loader)
        b = tb[y.reshape(-1)]
        counted += int((b > 0).sum())
        nbytes += int(b.sum())
    assert rec["total_bytes"] == nbytes
    assert bpb == pytest.approx(counted * math.log(512) / (math.log(2) * nbytes), rel=1e-6)
    assert not [p for p in record.parent.iterdir() if p.name != "eval.json"]  # atomic: no temp left


def test_evaluate_bpb_without_record(micro_env, tmp_path):
    assert "AUTORESEARCH_EVAL_RECORD" not in os.environ
    bpb = P.evaluate_bpb(UniformModel(512), P.Tokenizer.from_directory(), 512)  # > EVAL_TOKENS: 1 batch
    assert math.isfinite(bpb) and bpb > 0


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
