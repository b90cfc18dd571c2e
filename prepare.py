"""
The fixed part of the autoresearch experiment: constants, data, tokenizer, dataloader, evaluation.

Candidates never change this file; it is copied into every candidate workspace and imported by
train.py. It is kept import-light: torch only (pyarrow, tiktoken, rustbpe, rich and requests are
imported inside the functions that need them).

Presets (env AUTORESEARCH_PRESET, or --preset on the command line; default "auto"):
    gpu    the upstream experiment: seq 2048, vocab 8192, 300 s budget, climbmix data
    cpu    a demo for 2 CPU cores: seq 256, vocab 2048, 45 s budget, Python stdlib source as data
    micro  for tests: seq 64, vocab 512, 4 s budget, Python stdlib source as data
    auto   gpu when torch.cuda.is_available() else cpu

Environment variables:
    AUTORESEARCH_PRESET       gpu | cpu | micro | auto (default auto), read at import time
    AUTORESEARCH_TIME_BUDGET  seconds; overrides the preset's TIME_BUDGET (tests, benchmarks)
    AUTORESEARCH_CACHE        cache root (default ~/.cache/autoresearch); data and tokenizer live in
                              <cache>/<preset>/data/*.parquet and <cache>/<preset>/tokenizer/
    AUTORESEARCH_SOURCE       climbmix | stdlib | /path/to/folder (of .txt / .parquet files);
                              only used by `prepare`; default: gpu -> climbmix, cpu/micro -> stdlib
    AUTORESEARCH_CLIMBMIX_URL base URL of the climbmix shards (default: the Hugging Face hub; a mirror)
    AUTORESEARCH_EVAL_RECORD  if set, evaluate_bpb() atomically writes a JSON record of what it
                              computed to this path (the harness compares it with the printed val_bpb)

Command line:
    python prepare.py --preset micro [--source stdlib] [--num-shards N] [--cache-dir DIR]
"""

import json
import math
import os
import sys
import time
from pathlib import Path

import torch

# ---------------------------------------------------------------------------------------------
# Presets and constants

PRESETS = {
    "gpu": dict(
        max_seq_len=2048, time_budget=300, eval_tokens=40 * 524288, vocab_size=8192,
        source="climbmix", num_shards=10,
        tokenizer_max_chars=1_000_000_000,  # upstream: up to 1e9 characters of training text
        corpus_max_chars=None,             # no cap for local sources
        max_doc_chars=8000,                # local sources: split long files into documents
    ),
    "cpu": dict(
        max_seq_len=256, time_budget=45, eval_tokens=2**17, vocab_size=2048,
        source="stdlib", num_shards=4,
        tokenizer_max_chars=6_000_000,
        corpus_max_chars=None,
        max_doc_chars=1200,
    ),
    "micro": dict(
        max_seq_len=64, time_budget=4, eval_tokens=2**15, vocab_size=512,
        source="stdlib", num_shards=2,
        tokenizer_max_chars=1_000_000,
        corpus_max_chars=2_500_000,
        max_doc_chars=400,
    ),
}
VALID_PRESETS = ("gpu", "cpu", "micro", "auto")
VALID_SOURCES = ("climbmix", "stdlib")

SPLIT_SEED = 1337             # seeded train/val split of local corpora
VAL_FRACTION = 0.1            # share of a local corpus (in characters) pinned as the val shard
TOKENIZER_DOC_CAP = 10_000    # documents are capped at this many characters for tokenizer training

# climbmix on the Hugging Face hub: shard_00000.parquet .. shard_06542.parquet, the last one is val
CLIMBMIX_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_MAX_SHARD = 6542
CLIMBMIX_VAL_SHARD = f"shard_{CLIMBMIX_MAX_SHARD:05d}.parquet"

# GPT-4 style split pattern, with \p{N}{1,2} instead of \p{N}{1,3}
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)
SPECIAL_TOKENS = [f"<|reserved_{i}|>" for i in range(4)]
BOS_TOKEN = SPECIAL_TOKENS[0]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def resolve_preset(name=None):
    """Validated preset name; "auto" (or None) -> gpu if CUDA is available else cpu."""
    name = (name or "auto").strip().lower()
    if name not in VALID_PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(VALID_PRESETS)}")
    if name == "auto":
        name = "gpu" if torch.cuda.is_available() else "cpu"
    return name


def _time_budget(preset):
    override = os.environ.get("AUTORESEARCH_TIME_BUDGET")
    if override:
        try:
            value = float(override)
        except ValueError:
            raise ValueError(f"AUTORESEARCH_TIME_BUDGET must be a number of seconds, got {override!r}")
        if value <= 0:
            raise ValueError(f"AUTORESEARCH_TIME_BUDGET must be > 0, got {override!r}")
        return int(value) if value.is_integer() else value
    return PRESETS[preset]["time_budget"]


PRESET = resolve_preset(os.environ.get("AUTORESEARCH_PRESET"))
MAX_SEQ_LEN = PRESETS[PRESET]["max_seq_len"]      # context length
TIME_BUDGET = _time_budget(PRESET)                # training time budget in seconds
EVAL_TOKENS = PRESETS[PRESET]["eval_tokens"]      # number of tokens for the val evaluation
VOCAB_SIZE = PRESETS[PRESET]["vocab_size"]        # including the 4 special tokens

# ---------------------------------------------------------------------------------------------
# Cache layout, atomic writes


def cache_root(cache_dir=None):
    root = cache_dir or os.environ.get("AUTORESEARCH_CACHE") or "~/.cache/autoresearch"
    return Path(root).expanduser()


def cache_dir_for(preset=None, cache_dir=None):
    """<cache>/<preset>: holds data/ and tokenizer/ of one preset."""
    return cache_root(cache_dir) / resolve_preset(preset or PRESET)


def prepare_command(preset):
    cmd = f"autoresearch prepare --preset {preset}` (or `python prepare.py --preset {preset}`)"
    env = os.environ.get("AUTORESEARCH_CACHE")
    if env:
        cmd += f" with AUTORESEARCH_CACHE={env}"
    return "`" + cmd


def _missing(what, path, preset):
    return FileNotFoundError(f"{what} not found at {path}. Prepare it first: run {prepare_command(preset)}")


def _tmp_path(path):
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")


def _fsync_replace(tmp, path):
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_bytes(path, data):
    """Write data to a temporary file in the same directory, then os.replace (never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _atomic_write_parquet(path, texts, row_group_size=1024):
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        pq.write_table(pa.table({"text": pa.array(texts, type=pa.string())}), tmp,
                       row_group_size=row_group_size)
        _fsync_replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _clean_tmp(directory):
    """Remove temporary files left by a crashed writer; they are never trusted."""
    if directory.is_dir():
        for p in directory.iterdir():
            if p.name.endswith(".tmp") and p.is_file():
                p.unlink()


# ---------------------------------------------------------------------------------------------
# Data sources


def _resolve_source(source, preset):
    source = source or os.environ.get("AUTORESEARCH_SOURCE") or PRESETS[preset]["source"]
    if source in VALID_SOURCES:
        return source
    if Path(source).expanduser().is_dir():
        return str(Path(source).expanduser().resolve())
    raise ValueError(f"unknown source {source!r}; valid sources: {', '.join(VALID_SOURCES)}, "
                     f"or the path of an existing folder of .txt/.parquet files")


def _split_document(text, max_chars):
    """Split a long text into documents at line boundaries: cut after a blank line once a chunk
    has max_chars/2 characters, or at the first line boundary past max_chars."""
    if len(text) <= max_chars:
        return [text] if text.strip() else []
    docs, cur, n = [], [], 0
    for line in text.splitlines(keepends=True):
        cur.append(line)
        n += len(line)
        if n >= max_chars or (n >= max_chars // 2 and not line.strip()):
            chunk = "".join(cur)
            if chunk.strip():
                docs.append(chunk)
            cur, n = [], 0
    chunk = "".join(cur)
    if chunk.strip():
        docs.append(chunk)
    return docs


def _stdlib_files():
    """The running Python's standard-library .py files (no tests, no site-packages), sorted."""
    import sysconfig
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        files.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
    return root, sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read_text(path):
    try:
        return path.read_bytes().decode("utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # honest corpus: skip files that are not UTF-8 text


def _stdlib_units(max_doc_chars):
    """One unit per stdlib file: the list of documents it is split into (units never straddle
    the train/val split)."""
    root, files = _stdlib_files()
    units = []
    for p in files:
        text = _read_text(p)
        if text:
            docs = _split_document(text, max_doc_chars)
            if docs:
                units.append(docs)
    return units, {"root": str(root), "files": len(files)}


def _folder_units(folder, max_doc_chars):
    """One unit per document of a user folder: .txt files are split into documents, .parquet
    files give their `text` column."""
    import pyarrow.parquet as pq
    folder = Path(folder)
    files = sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix in (".txt", ".parquet")),
                   key=lambda p: p.relative_to(folder).as_posix())
    units = []
    for p in files:
        if p.suffix == ".txt":
            text = _read_text(p)
            docs = _split_document(text, max_doc_chars) if text else []
        else:
            table = pq.read_table(p)
            if "text" not in table.column_names:
                raise ValueError(f"{p} has no `text` column")
            docs = [t for t in table.column("text").to_pylist() if t and t.strip()]
        units.extend([d] for d in docs)
    if not units:
        raise ValueError(f"no .txt or .parquet text found in {folder}")
    return units, {"root": str(folder), "files": len(files)}


def _write_local_corpus(units, data_dir, num_shards, corpus_max_chars, info):
    """Seeded split of units into one pinned val shard and num_shards train shards."""
    import random
    rng = random.Random(SPLIT_SEED)
    rng.shuffle(units)
    if corpus_max_chars:
        kept, total = [], 0
        for u in units:
            if total >= corpus_max_chars:
                break
            kept.append(u)
            total += sum(len(d) for d in u)
        units = kept
    total = sum(len(d) for u in units for d in u)
    val_docs, train_docs, val_chars = [], [], 0
    for u in units:
        if val_chars < VAL_FRACTION * total or not val_docs:
            val_docs.extend(u)
            val_chars += sum(len(d) for d in u)
        else:
            train_docs.extend(u)
    if not train_docs:
        raise ValueError("corpus too small: nothing left for training after the val split")
    rng.shuffle(train_docs)  # mix documents of different files within the train shards
    num_shards = max(1, min(num_shards, len(train_docs)))
    train_names = []
    per = math.ceil(len(train_docs) / num_shards)
    for i in range(num_shards):
        name = f"shard_{i:05d}.parquet"
        _atomic_write_parquet(data_dir / name, train_docs[i * per:(i + 1) * per])
        train_names.append(name)
    val_name = "shard_val.parquet"  # sorts after the train shards, like upstream's pinned last shard
    _atomic_write_parquet(data_dir / val_name, val_docs)
    return dict(train=train_names, val=val_name, num_train_docs=len(train_docs),
                num_val_docs=len(val_docs), train_chars=total - val_chars, val_chars=val_chars, **info)


def _download(url, dest, progress=None, retries=6):
    """Download url to dest with retries; resumes a leftover dest.part with an HTTP Range request;
    the .part file becomes dest (os.replace) only once it reads as a valid parquet file."""
    import pyarrow.parquet as pq
    import requests
    part = dest.with_name(dest.name + ".part")
    last_error = None
    for attempt in range(1, retries + 1):
        task = None
        try:
            have = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            with requests.get(url, headers=headers, stream=True, timeout=(15, 120)) as r:
                if r.status_code == 416:  # nothing more to fetch: the .part is complete (or bad)
                    have = -1
                else:
                    r.raise_for_status()
                    if have and r.status_code != 206:  # server ignored the range: start over
                        have = 0
                    size = int(r.headers.get("Content-Length", 0)) + max(have, 0)
                    if progress is not None:
                        task = progress.add_task(dest.name, total=size or None, completed=max(have, 0))
                    with open(part, "ab" if have else "wb") as f:
                        for chunk in r.iter_content(chunk_size=1 << 20):
                            f.write(chunk)
                            if task is not None:
                                progress.advance(task, len(chunk))
                        f.flush()
                        os.fsync(f.fileno())
            try:
                pq.ParquetFile(part)  # reads the footer: a truncated file fails here
            except Exception as e:
                part.unlink(missing_ok=True)
                raise OSError(f"downloaded file is not a valid parquet file ({e})")
            os.replace(part, dest)
            return
        except (requests.RequestException, OSError) as e:
            last_error = e
            if attempt < retries:
                wait = min(2 ** attempt, 30)
                print(f"  {dest.name}: attempt {attempt}/{retries} failed ({e}); retrying in {wait}s",
                      file=sys.stderr, flush=True)
                time.sleep(wait)
        finally:
            if task is not None:
                progress.remove_task(task)
    raise RuntimeError(f"could not download {url} after {retries} attempts: {last_error}")


def _download_climbmix(data_dir, num_shards):
    base = os.environ.get("AUTORESEARCH_CLIMBMIX_URL", CLIMBMIX_URL).rstrip("/")
    if not 1 <= num_shards <= CLIMBMIX_MAX_SHARD:
        raise ValueError(f"num_shards must be in 1..{CLIMBMIX_MAX_SHARD}, got {num_shards}")
    train = [f"shard_{i:05d}.parquet" for i in range(num_shards)]
    todo = [n for n in train + [CLIMBMIX_VAL_SHARD] if not (data_dir / n).exists()]
    if todo:
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn())
        print(f"downloading {len(todo)} climbmix shard(s) from {base}", flush=True)
        with Progress(*columns) as progress:
            overall = progress.add_task("shards", total=len(todo))
            for name in todo:
                _download(f"{base}/{name}", data_dir / name, progress)
                progress.advance(overall)
    return dict(train=train, val=CLIMBMIX_VAL_SHARD, downloaded=len(todo), url=base)


def _read_manifest(data_dir):
    try:
        return json.loads((data_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _manifest_complete(manifest, data_dir):
    return manifest is not None and all((data_dir / n).is_file()
                                        for n in manifest["train"] + [manifest["val"]])


# ---------------------------------------------------------------------------------------------
# Tokenizer


class Tokenizer:
    """A pickled tiktoken.Encoding (trained with rustbpe) with BOS = <|reserved_0|>."""

    def __init__(self, enc):
        self.enc = enc
        self.bos_token_id = enc.encode_single_token(BOS_TOKEN)

    @classmethod
    def from_directory(cls, tokenizer_dir=None):
        import pickle
        tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else cache_dir_for(PRESET) / "tokenizer"
        path = tokenizer_dir / "tokenizer.pkl"
        if not path.is_file():
            raise _missing("tokenizer", path, tokenizer_dir.parent.name)
        with open(path, "rb") as f:
            return cls(pickle.load(f))

    def get_vocab_size(self):
        return self.enc.n_vocab

    def get_bos_token_id(self):
        return self.bos_token_id

    def encode(self, text, prepend=None, num_threads=8):
        if prepend is not None:
            prepend = prepend if isinstance(prepend, int) else self.enc.encode_single_token(prepend)
        if isinstance(text, str):
            ids = self.enc.encode_ordinary(text)
            return [prepend] + ids if prepend is not None else ids
        if isinstance(text, (list, tuple)):
            out = self.enc.encode_ordinary_batch(list(text), num_threads=num_threads)
            if prepend is not None:
                out = [[prepend] + ids for ids in out]
            return out
        raise TypeError(f"encode expects a str or a list of str, got {type(text).__name__}")

    def decode(self, ids):
        return self.enc.decode(ids)


def get_token_bytes(device="cpu", tokenizer_dir=None):
    """Tensor of the byte length of each token id (0 for special tokens)."""
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else cache_dir_for(PRESET) / "tokenizer"
    path = tokenizer_dir / "token_bytes.pt"
    if not path.is_file():
        raise _missing("token_bytes", path, tokenizer_dir.parent.name)
    return torch.load(path, map_location="cpu", weights_only=True).to(device)


def _iter_training_text(data_dir, train_names, max_chars):
    import pyarrow.parquet as pq
    total = 0
    for name in train_names:
        pf = pq.ParquetFile(data_dir / name)
        for rg in range(pf.num_row_groups):
            for text in pf.read_row_group(rg, columns=["text"]).column("text").to_pylist():
                text = text[:TOKENIZER_DOC_CAP]
                yield text
                total += len(text)
                if total >= max_chars:
                    return


def train_tokenizer(data_dir, train_names, tokenizer_dir, vocab_size, max_chars):
    import pickle
    import rustbpe
    import tiktoken
    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(_iter_training_text(data_dir, train_names, max_chars),
                            vocab_size - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
    ranks = {bytes(k): v for k, v in bpe.get_mergeable_ranks()}
    offset = len(ranks)
    enc = tiktoken.Encoding(name="autoresearch", pat_str=bpe.get_pattern(), mergeable_ranks=ranks,
                            special_tokens={t: offset + i for i, t in enumerate(SPECIAL_TOKENS)})
    token_bytes = torch.tensor([len(enc.decode_single_token_bytes(i)) if i < offset else 0
                                for i in range(enc.n_vocab)], dtype=torch.int32)
    # token_bytes first, tokenizer.pkl last: from_directory() trusts the pickle's presence
    buf = _tmp_path(tokenizer_dir / "token_bytes.pt")
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    try:
        torch.save(token_bytes, buf)
        _fsync_replace(buf, tokenizer_dir / "token_bytes.pt")
    finally:
        if buf.exists():
            buf.unlink()
    atomic_write_bytes(tokenizer_dir / "tokenizer.pkl", pickle.dumps(enc))
    return enc.n_vocab


# ---------------------------------------------------------------------------------------------
# prepare(): data + tokenizer, idempotent


def prepare(preset, source=None, num_shards=None, cache_dir=None):
    """Prepare the data shards and the tokenizer of a preset under <cache_dir>/<preset>/
    (cache_dir defaults to AUTORESEARCH_CACHE or ~/.cache/autoresearch). Idempotent: what is
    already there and complete is kept. Returns a dict of paths, counts and actions."""
    t0 = time.time()
    preset = resolve_preset(preset)
    cfg = PRESETS[preset]
    source = _resolve_source(source, preset)
    num_shards = int(num_shards) if num_shards is not None else cfg["num_shards"]
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    root = cache_dir_for(preset, cache_dir)
    data_dir, tok_dir = root / "data", root / "tokenizer"
    data_dir.mkdir(parents=True, exist_ok=True)
    _clean_tmp(data_dir)
    _clean_tmp(tok_dir)

    # 1. data
    request = dict(version=FORMAT_VERSION, preset=preset, source=source, num_shards=num_shards)
    manifest = _read_manifest(data_dir)
    same = manifest is not None and all(manifest.get(k) == v for k, v in request.items())
    if same and _manifest_complete(manifest, data_dir):
        data_action = "cached"
    else:
        if source == "climbmix":
            info = _download_climbmix(data_dir, num_shards)
        else:
            if source == "stdlib":
                units, meta = _stdlib_units(cfg["max_doc_chars"])
            else:
                units, meta = _folder_units(source, cfg["max_doc_chars"])
            info = _write_local_corpus(units, data_dir, num_shards, cfg["corpus_max_chars"], meta)
        manifest = dict(request, **info)
        atomic_write_json(data_dir / MANIFEST, manifest)  # written last: marks the data complete
        keep = set(manifest["train"]) | {manifest["val"], MANIFEST}
        if source != "climbmix":  # local corpora: drop shards of an earlier, different split
            for p in data_dir.glob("*.parquet"):
                if p.name not in keep:
                    p.unlink()
        data_action = "created"

    # 2. tokenizer (retrained when the data it was trained on changed)
    fingerprint = dict(source=manifest["source"], train=manifest["train"], vocab_size=cfg["vocab_size"],
                       max_chars=cfg["tokenizer_max_chars"], num_train_docs=manifest.get("num_train_docs"),
                       version=FORMAT_VERSION)
    try:
        old = json.loads((tok_dir / "meta.json").read_text())
    except (OSError, ValueError):
        old = None
    complete = (tok_dir / "tokenizer.pkl").is_file() and (tok_dir / "token_bytes.pt").is_file()
    if complete and old == fingerprint:
        tok_action = "cached"
    else:
        (tok_dir / "meta.json").unlink(missing_ok=True)
        train_tokenizer(data_dir, manifest["train"], tok_dir, cfg["vocab_size"], cfg["tokenizer_max_chars"])
        atomic_write_json(tok_dir / "meta.json", fingerprint)
        tok_action = "trained"
    vocab_size = get_token_bytes(tokenizer_dir=tok_dir).numel()
    if vocab_size < cfg["vocab_size"]:
        print(f"warning: the corpus is too small for a {cfg['vocab_size']}-token vocabulary; "
              f"the tokenizer has {vocab_size} tokens", file=sys.stderr)

    return dict(preset=preset, source=source, cache_dir=str(root), data_dir=str(data_dir),
                tokenizer_dir=str(tok_dir), train_shards=len(manifest["train"]), val_shard=manifest["val"],
                num_train_docs=manifest.get("num_train_docs"), num_val_docs=manifest.get("num_val_docs"),
                vocab_size=vocab_size, data=data_action, tokenizer=tok_action,
                seconds=round(time.time() - t0, 2))


# ---------------------------------------------------------------------------------------------
# Dataloader


def _split_paths(split, preset=None):
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    preset = resolve_preset(preset or PRESET)
    data_dir = cache_dir_for(preset) / "data"
    manifest = _read_manifest(data_dir)
    if not _manifest_complete(manifest, data_dir):
        raise _missing("dataset", data_dir, preset)
    names = manifest["train"] if split == "train" else [manifest["val"]]
    return [data_dir / n for n in names]


def _document_batches(tokenizer, paths, batch_docs=128):
    """Yields (list of token lists, each starting with BOS, epoch), cycling over paths forever."""
    import pyarrow.parquet as pq
    bos = tokenizer.get_bos_token_id()
    threads = os.cpu_count() or 1
    epoch = 1
    while True:
        for path in paths:
            pf = pq.ParquetFile(path)
            for rg in range(pf.num_row_groups):
                texts = pf.read_row_group(rg, columns=["text"]).column("text").to_pylist()
                for i in range(0, len(texts), batch_docs):
                    yield tokenizer.encode(texts[i:i + batch_docs], prepend=bos, num_threads=threads), epoch
        epoch += 1


def make_dataloader(tokenizer, B, T, split, device=None, buffer_size=1000):
    """Infinite iterator of (inputs, targets, epoch) with inputs/targets of shape (B, T).
    Each row is T+1 tokens of BOS-prefixed documents packed best-fit (the largest buffered
    document that fits; when none fits, the shortest is cropped to fill the row): every row
    starts with BOS, no padding. On CUDA rows go through pinned host buffers, copied non_blocking."""
    import bisect
    import numpy as np
    paths = _split_paths(split)
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    use_cuda = device.type == "cuda"
    row_len = T + 1
    batches = _document_batches(tokenizer, paths)
    lens, docs = [], []  # buffer of documents kept sorted by length
    epoch = 1

    def refill():
        nonlocal epoch
        while len(docs) < buffer_size:
            new, epoch = next(batches)
            for d in new:
                i = bisect.bisect_right(lens, len(d))
                lens.insert(i, len(d))
                docs.insert(i, d)

    if use_cuda:  # two pinned host buffers, reused only after their copy has finished
        hosts = [torch.empty((B, row_len), dtype=torch.long).pin_memory() for _ in range(2)]
        events = [None, None]
    slot = 0
    while True:
        rows = np.empty((B, row_len), dtype=np.int64)
        for r in range(B):
            pos = 0
            while pos < row_len:
                refill()
                remaining = row_len - pos
                i = bisect.bisect_right(lens, remaining) - 1
                if i >= 0:  # largest document that fits
                    n = lens.pop(i)
                    rows[r, pos:pos + n] = docs.pop(i)
                    pos += n
                else:  # none fits: crop the shortest to fill the row
                    lens.pop(0)
                    rows[r, pos:] = docs.pop(0)[:remaining]
                    pos = row_len
        if use_cuda:
            if events[slot] is not None:
                events[slot].synchronize()
            host = hosts[slot]
            host.copy_(torch.from_numpy(rows))
            batch = host.to(device, non_blocking=True)
            events[slot] = torch.cuda.Event()
            events[slot].record()
            slot = 1 - slot
        else:
            batch = torch.from_numpy(rows)
            if device.type != "cpu":
                batch = batch.to(device)
        yield batch[:, :-1].contiguous(), batch[:, 1:].contiguous(), epoch


# ---------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate_bpb(model, tokenizer, batch_size):
    """Validation bits per byte: sum of per-token cross-entropy (nats) over target tokens with a
    byte length > 0, divided by ln(2) * their total byte length. Vocabulary-size independent.
    When AUTORESEARCH_EVAL_RECORD is set, atomically writes a JSON record of the computation."""
    t0 = time.time()
    device = next(model.parameters()).device
    token_bytes = get_token_bytes(device)
    num_batches = max(1, EVAL_TOKENS // (batch_size * MAX_SEQ_LEN))
    loader = make_dataloader(tokenizer, batch_size, MAX_SEQ_LEN, "val", device=device)
    total_nats = torch.zeros((), dtype=torch.float64, device=device)
    total_bytes = torch.zeros((), dtype=torch.int64, device=device)
    for _ in range(num_batches):
        x, y, _ = next(loader)
        loss = model(x, y, reduction="none").reshape(-1).double()
        nbytes = token_bytes[y.reshape(-1)]
        mask = nbytes > 0
        total_nats += torch.where(mask, loss, torch.zeros_like(loss)).sum()
        total_bytes += nbytes.sum()
    total_nats, total_bytes = total_nats.item(), int(total_bytes.item())
    val_bpb = total_nats / (math.log(2) * total_bytes) if total_bytes > 0 else float("inf")
    record_path = os.environ.get("AUTORESEARCH_EVAL_RECORD")
    if record_path:
        atomic_write_json(record_path, dict(
            val_bpb=val_bpb, total_nats=total_nats, total_bytes=total_bytes,
            num_tokens=num_batches * batch_size * MAX_SEQ_LEN, num_batches=num_batches,
            batch_size=batch_size, preset=PRESET, time_budget=TIME_BUDGET, max_seq_len=MAX_SEQ_LEN,
            eval_tokens=EVAL_TOKENS, eval_seconds=round(time.time() - t0, 3)))
    return val_bpb


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description="Prepare the data and tokenizer of an autoresearch preset.")
    parser.add_argument("--preset", default=os.environ.get("AUTORESEARCH_PRESET", "auto"),
                        help=f"one of {', '.join(VALID_PRESETS)} (default: $AUTORESEARCH_PRESET or auto)")
    parser.add_argument("--source", default=None,
                        help="climbmix | stdlib | path to a folder of .txt/.parquet files "
                             "(default: $AUTORESEARCH_SOURCE, else climbmix for gpu, stdlib for cpu/micro)")
    parser.add_argument("--num-shards", type=int, default=None, help="number of training shards")
    parser.add_argument("--cache-dir", default=None, help="cache root (default: $AUTORESEARCH_CACHE "
                                                          "or ~/.cache/autoresearch)")
    args = parser.parse_args(argv)
    try:
        info = prepare(args.preset, source=args.source, num_shards=args.num_shards, cache_dir=args.cache_dir)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"preset {info['preset']}: source {info['source']}")
    print(f"  data ({info['data']}): {info['train_shards']} train shard(s) + val {info['val_shard']} "
          f"in {info['data_dir']}" + (f" ({info['num_train_docs']:,} train / {info['num_val_docs']:,} val docs)"
                                      if info.get("num_train_docs") else ""))
    print(f"  tokenizer ({info['tokenizer']}): vocab {info['vocab_size']} in {info['tokenizer_dir']}")
    print(f"  done in {info['seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
