"""
The fixed part of the autoresearch experiment: constants, data, tokenizer, dataloader, the budget
clock and the evaluation. Candidates never change this file, and it owns every measurement.

Kept import-light: torch only (pyarrow, numpy, tiktoken, rustbpe, rich and requests are imported
inside the functions that need them).

What candidates import (measurement version 2):
    PRESET, MAX_SEQ_LEN, TIME_BUDGET, EVAL_TOKENS, VOCAB_SIZE    the preset's constants
    Tokenizer                                                      Tokenizer.from_directory()
    make_dataloader(tokenizer, B, T, "train", device)              the training split only
    TrainingClock()                                                tick() once per optimizer step
    evaluate_bpb(model, tokenizer, batch_size)                     once, at the end

The model contract: `model(idx)` with idx of shape (B, T) returns float logits of shape
(B, T, vocab). evaluate_bpb computes the cross-entropy itself; how train.py computes its own
training loss is its business.

Presets (--preset on the command line; under the harness, its settings; default "auto"):
    gpu    the upstream experiment: seq 2048, vocab 8192, 300 s budget (wall clock), climbmix data
    cpu    a demo for 2 CPU cores: seq 256, vocab 2048, 45 s budget (CPU time), stdlib source
    micro  for tests: seq 64, vocab 512, 4 s budget (CPU time), Python stdlib source as data
    auto   gpu when torch.cuda.is_available() else cpu

Two ways this module runs:
  * under the harness (sandbox/harness.py -> sandbox/bootstrap.py): the bootstrap imports it
    before train.py runs and hands it the settings through a pipe the candidate never sees; the
    environment is not read. evaluate_bpb sends its record to the harness, authenticated.
  * on its own (`python prepare.py`, `python train.py` by hand, tests): the settings come from
    the environment below and nothing is sent anywhere.

Environment variables (only when not under the harness):
    AUTORESEARCH_PRESET       gpu | cpu | micro | auto (default auto), read at import time
    AUTORESEARCH_TIME_BUDGET  seconds; overrides the preset's TIME_BUDGET (tests, benchmarks)
    AUTORESEARCH_CACHE        cache root (default ~/.cache/autoresearch); data and tokenizer live in
                              <cache>/<preset>/data/*.parquet and <cache>/<preset>/tokenizer/
    AUTORESEARCH_SOURCE       climbmix | stdlib | /path/to/folder (of .txt / .parquet files);
                              only used by `prepare`; default: gpu -> climbmix, cpu/micro -> stdlib
    AUTORESEARCH_CLIMBMIX_URL base URL of the climbmix shards (default: the Hugging Face hub; a mirror)

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

# The harness's bootstrap puts the link (settings without the key, the signing closures) into
# this module's namespace before running it; take it out at once so that no module attribute
# holds it once train.py runs. None when this module runs on its own.
_link = globals().pop("__autoresearch_link__", None)

# ---------------------------------------------------------------------------------------------
# Presets and constants

# How results are measured. Bumped when a change makes new numbers incomparable with old ones
# (2: the clock lives here, CPU time on CPU presets; evaluate_bpb computes the loss from logits).
MEASUREMENT_VERSION = 2

# clock: "wall" (CUDA-synchronised wall clock, as upstream) or "cpu" (CPU seconds of the process
#   over all its threads, so that other load on the machine does not change how much a candidate
#   computes). startup_allowance: seconds of that clock, from interpreter start, that do not
#   count as training (interpreter, imports, data loader start, model build; compilation on GPU).
# first_forward_allowance: the first forward pass of the evaluation may take this much longer than
#   the others (lazy initialisation; on GPU recompilation for inference) before the excess counts
#   as training.
PRESETS = {
    "gpu": dict(
        max_seq_len=2048, time_budget=300, eval_tokens=40 * 524288, vocab_size=8192,
        clock="wall", startup_allowance=60, first_forward_allowance=120,
        source="climbmix", num_shards=10,
        tokenizer_max_chars=1_000_000_000,  # upstream: up to 1e9 characters of training text
        corpus_max_chars=None,             # no cap for local sources
        max_doc_chars=8000,                # local sources: split long files into documents
    ),
    "cpu": dict(
        max_seq_len=256, time_budget=45, eval_tokens=2**17, vocab_size=2048,
        clock="cpu", startup_allowance=5, first_forward_allowance=1.0,
        source="stdlib", num_shards=4,
        tokenizer_max_chars=6_000_000,
        corpus_max_chars=None,
        max_doc_chars=1200,
    ),
    "micro": dict(
        max_seq_len=64, time_budget=4, eval_tokens=2**15, vocab_size=512,
        clock="cpu", startup_allowance=4, first_forward_allowance=0.25,
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
LOGITS_BYTES_PER_FORWARD = 1 << 30   # evaluate_bpb splits batches so fp32 logits stay below 1 GiB

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
VAL_ROWS = "val_rows.npy"          # the evaluation's rows, tokenized once by prepare()
VAL_ROWS_META = "val_rows.json"


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


def _seconds(value):
    value = float(value)
    return int(value) if value.is_integer() else value


if _link is not None:   # under the harness: its settings, never the environment
    PRESET = _link.settings["preset"]
    TIME_BUDGET = _seconds(_link.settings["budget"])
    _CACHE_ROOT = _link.settings["cache_root"]
else:
    PRESET = resolve_preset(os.environ.get("AUTORESEARCH_PRESET"))
    TIME_BUDGET = _time_budget(PRESET)            # training time budget in seconds
    _CACHE_ROOT = None
MAX_SEQ_LEN = PRESETS[PRESET]["max_seq_len"]      # context length
EVAL_TOKENS = PRESETS[PRESET]["eval_tokens"]      # number of tokens for the val evaluation
VOCAB_SIZE = PRESETS[PRESET]["vocab_size"]        # including the 4 special tokens

# ---------------------------------------------------------------------------------------------
# Cache layout, atomic writes


def cache_root(cache_dir=None):
    root = cache_dir or _CACHE_ROOT or os.environ.get("AUTORESEARCH_CACHE") or "~/.cache/autoresearch"
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

    # 3. the evaluation's rows, tokenized once (evaluate_bpb falls back to tokenizing them itself)
    rows_action = _write_val_rows(data_dir, tok_dir, manifest, preset)

    return dict(preset=preset, source=source, cache_dir=str(root), data_dir=str(data_dir),
                tokenizer_dir=str(tok_dir), train_shards=len(manifest["train"]), val_shard=manifest["val"],
                num_train_docs=manifest.get("num_train_docs"), num_val_docs=manifest.get("num_val_docs"),
                vocab_size=vocab_size, data=data_action, tokenizer=tok_action, val_rows=rows_action,
                seconds=round(time.time() - t0, 2))

# ---------------------------------------------------------------------------------------------
# Rows: documents packed into rows of T+1 tokens (shared by the training loader and the evaluation)


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
    # as many tokenizer threads as cores this process may use: under the harness that is its
    # slot's core(s), and extra threads there only contend (and count on the CPU clock)
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    epoch = 1
    while True:
        for path in paths:
            pf = pq.ParquetFile(path)
            for rg in range(pf.num_row_groups):
                texts = pf.read_row_group(rg, columns=["text"]).column("text").to_pylist()
                for i in range(0, len(texts), batch_docs):
                    yield tokenizer.encode(texts[i:i + batch_docs], prepend=bos, num_threads=threads), epoch
        epoch += 1


def _packed_rows(batches, row_len, buffer_size=1000):
    """Yields (row, epoch): numpy int64 rows of BOS-prefixed documents packed best-fit (the
    largest buffered document that fits; when none fits, the shortest is cropped to fill the
    row). Every row starts with BOS; no padding."""
    import bisect
    import numpy as np
    lens, docs = [], []  # buffer of documents kept sorted by length
    epoch = 1
    while True:
        row = np.empty(row_len, dtype=np.int64)
        pos = 0
        while pos < row_len:
            while len(docs) < buffer_size:
                new, epoch = next(batches)
                for d in new:
                    i = bisect.bisect_right(lens, len(d))
                    lens.insert(i, len(d))
                    docs.insert(i, d)
            remaining = row_len - pos
            i = bisect.bisect_right(lens, remaining) - 1
            if i >= 0:  # largest document that fits
                n = lens.pop(i)
                row[pos:pos + n] = docs.pop(i)
                pos += n
            else:  # none fits: crop the shortest to fill the row
                lens.pop(0)
                row[pos:] = docs.pop(0)[:remaining]
                pos = row_len
        yield row, epoch


def _file_sha256(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _val_rows_fingerprint(val_path, tokenizer_dir, preset):
    return dict(val=Path(val_path).name, val_bytes=Path(val_path).stat().st_size,
                tokenizer=_file_sha256(Path(tokenizer_dir) / "tokenizer.pkl"),
                max_seq_len=PRESETS[preset]["max_seq_len"],
                rows=PRESETS[preset]["eval_tokens"] // PRESETS[preset]["max_seq_len"], version=FORMAT_VERSION)


def build_val_rows(val_path, tokenizer_dir, preset):
    """The evaluation's rows from the val shard: (EVAL_TOKENS // T, T + 1) int32, the first rows
    of the packed val stream (the same rows whatever batch size the candidate evaluates with)."""
    import numpy as np
    cfg = PRESETS[preset]
    T, n = cfg["max_seq_len"], cfg["eval_tokens"] // cfg["max_seq_len"]
    tok = Tokenizer.from_directory(tokenizer_dir)
    rows = _packed_rows(_document_batches(tok, [Path(val_path)]), T + 1)
    return np.stack([next(rows)[0] for _ in range(n)]).astype(np.int32)


def load_val_rows(val_path, tokenizer_dir, preset, rows_path=None):
    """The evaluation's rows: the file prepare() wrote when it matches the val shard and the
    tokenizer, else tokenized now. Returns (int64 CPU tensor, where it came from)."""
    import numpy as np
    rows_path = Path(rows_path) if rows_path else Path(val_path).with_name(VAL_ROWS)
    meta_path = rows_path.with_name(VAL_ROWS_META)
    try:
        if json.loads(meta_path.read_text()) == _val_rows_fingerprint(val_path, tokenizer_dir, preset):
            with open(rows_path, "rb") as f:
                return torch.from_numpy(np.load(f).astype(np.int64)), "file"
    except (OSError, ValueError):
        pass
    return torch.from_numpy(build_val_rows(val_path, tokenizer_dir, preset).astype(np.int64)), "tokenized"


def _write_val_rows(data_dir, tok_dir, manifest, preset):
    """prepare() step 3: tokenize the evaluation's rows once (idempotent)."""
    import io
    import numpy as np
    val_path = data_dir / manifest["val"]
    fingerprint = _val_rows_fingerprint(val_path, tok_dir, preset)
    try:
        if json.loads((data_dir / VAL_ROWS_META).read_text()) == fingerprint and (data_dir / VAL_ROWS).is_file():
            return "cached"
    except (OSError, ValueError):
        pass
    (data_dir / VAL_ROWS_META).unlink(missing_ok=True)
    buf = io.BytesIO()
    np.save(buf, build_val_rows(val_path, tok_dir, preset))
    atomic_write_bytes(data_dir / VAL_ROWS, buf.getvalue())
    atomic_write_json(data_dir / VAL_ROWS_META, fingerprint)  # written last: marks the rows complete
    return "created"


# ---------------------------------------------------------------------------------------------
# The runtime: training loader, budget clock, evaluation
#
# They are built by one factory as closures over private state (the signing closures, the
# validation rows, the counters), so that plain code in train.py - an attribute read or
# assignment on this module - cannot reach or change them. The functions and classes they rely
# on are captured here, at import, before train.py runs: rebinding time.process_time,
# torch.Tensor or nn.Module.named_parameters later changes nothing prepare measures with.


class IntegrityError(RuntimeError):
    """A probe or check of evaluate_bpb failed; the harness records status `integrity`."""


def _build_runtime(link, module_globals):
    import builtins
    import operator
    import random
    import resource
    import statistics

    process_time, thread_time, monotonic = time.process_time, time.thread_time, time.monotonic
    os_times = os.times
    Tensor, Module = torch.Tensor, torch.nn.Module
    inference_mode, autocast, tensor_equal = torch.inference_mode, torch.autocast, torch.equal
    where, zeros, arange, is_autocast_enabled = torch.where, torch.zeros, torch.arange, torch.is_autocast_enabled
    as_index, Random, urandom, median = operator.index, random.Random, os.urandom, statistics.median
    # the C base class's methods, with subclass __torch_function__ off: a parameter of a tensor
    # subclass that overrides clone() or detach() still gets fingerprinted for real
    base_clone, base_detach = torch._C.TensorBase.clone, torch._C.TensorBase.detach
    plain_torch = torch._C.DisableTorchFunctionSubclass
    obj_get, obj_set = object.__getattribute__, object.__setattr__
    function_modes = getattr(torch._C, "_len_torch_function_stack", lambda: 0)
    dispatch_modes = getattr(torch._C, "_len_torch_dispatch_stack", lambda: 0)
    # What must not change between import and the end of the evaluation (see check_untouched):
    # the tensor methods prepare's arithmetic calls, the builtins and math functions, the torch
    # names prepare looks up, and this module's own attributes (sealed once it is imported).
    # Not all of torch, and not nn.Module: torch rebinds some names itself (manual_seed lazily;
    # torch.compile patches nn.Module.__init__), and prepare calls no Module method anyway.
    torch_names = ("Tensor", "nn", "cuda", "device", "float16", "bfloat16", "float32", "float64", "int64",
                   "long", "where", "zeros", "arange", "equal", "inference_mode", "autocast",
                   "is_autocast_enabled", "get_num_threads", "from_numpy", "empty")
    watched = {"torch.Tensor": torch.Tensor.__dict__, "builtins": vars(builtins), "math": vars(math),
               "torch": {k: getattr(torch, k) for k in torch_names}, "prepare": module_globals}
    live = {"torch": lambda: {k: getattr(torch, k, None) for k in torch_names}}
    snapshot = {name: {k: id(v) for k, v in d.items()} for name, d in watched.items()}

    settings = dict(link.settings) if link is not None else None
    send = link.send if link is not None else None
    wait_go = link.wait_go if link is not None else None
    cpu_offset = link.cpu_offset if link is not None else 0.0
    cfg = PRESETS[PRESET]
    clock_kind = cfg["clock"]
    allowance = float(settings["startup_allowance"]) if settings else float(cfg["startup_allowance"])
    budget = budget_seconds = float(TIME_BUDGET)
    # wall clock zero: the harness's spawn time (CLOCK_MONOTONIC is system-wide), else import time
    wall_zero = float(settings["t_spawn"]) if settings else monotonic()
    cuda = torch.cuda.is_available()
    state = dict(ticks=0, created=None, last=None, intervals=[], eval_calls=0, train_tokens=0,
                 val_rows=None, val_source=None)

    if settings:
        if settings.get("threads"):
            torch.set_num_threads(int(settings["threads"]))
        data = settings["data"]
        train_paths = [Path(p) for p in data["train"]]
        # the evaluation's rows and byte counts are read now, before the sandbox hides the files
        state["val_rows"], state["val_source"] = load_val_rows(data["val"], data["tokenizer"], PRESET,
                                                               data.get("val_rows"))
        token_bytes_cpu = get_token_bytes("cpu", data["tokenizer"])
    else:
        train_paths, token_bytes_cpu = None, None

    def raw_seconds():
        """The clock from interpreter start: CPU seconds of this process (all threads, plus
        waited-for children) on CPU presets, CUDA-synchronised wall seconds on GPU presets."""
        if clock_kind == "cpu":
            t = os_times()
            return cpu_offset + process_time() + t.children_user + t.children_system
        if cuda:
            torch.cuda.synchronize()
        return monotonic() - wall_zero

    class TrainingClock:
        """The training budget. Tick it once per optimizer step:

            clock = TrainingClock()
            while True:
                ...one optimizer step...
                progress = clock.tick()     # 0..1, for the schedules
                if clock.done:
                    break

        Training time is this process's time since interpreter start (CPU seconds on CPU
        presets, wall seconds with CUDA synchronisation on GPU) minus the preset's fixed
        start-up allowance; nothing before the first tick is free beyond that allowance. All
        clocks of a process share one count. The harness reads the same time from outside."""

        budget = budget_seconds
        kind = clock_kind

        def __init__(self):
            if state["created"] is None:    # the first step's duration counts from here
                state["created"] = raw_seconds()

        def tick(self):
            now = raw_seconds()
            previous = state["last"] if state["last"] is not None else state["created"]
            state["intervals"].append(now - previous)
            state["last"] = now
            state["ticks"] += 1
            return self.progress

        @property
        def seconds(self):
            """Training seconds so far (negative while still inside the start-up allowance)."""
            return raw_seconds() - allowance

        @property
        def progress(self):
            return min(max(self.seconds / budget, 0.0), 1.0)

        @property
        def done(self):
            return self.seconds >= budget

        @property
        def remaining(self):
            return max(0.0, budget - self.seconds)

        @property
        def steps(self):
            return state["ticks"]

        @property
        def last_step_seconds(self):
            return state["intervals"][-1] if state["intervals"] else 0.0

    def make_dataloader(tokenizer, B, T, split, device=None, buffer_size=1000):
        """Infinite iterator of (inputs, targets, epoch) with inputs/targets of shape (B, T),
        from the TRAINING split (the validation split is evaluate_bpb's). Each row is T+1 tokens
        of BOS-prefixed documents packed best-fit, starting with BOS, no padding. On CUDA rows
        go through pinned host buffers, copied non_blocking."""
        import numpy as np
        if split != "train":
            raise ValueError(f"make_dataloader serves the training split only (got split={split!r}); "
                             f"the validation split is evaluate_bpb's")
        paths = train_paths or _split_paths("train")
        device = torch.device(device if device is not None else ("cuda" if cuda else "cpu"))
        use_cuda = device.type == "cuda"
        rows = _packed_rows(_document_batches(tokenizer, paths), T + 1, buffer_size)
        if use_cuda:  # two pinned host buffers, reused only after their copy has finished
            hosts = [torch.empty((B, T + 1), dtype=torch.long).pin_memory() for _ in range(2)]
            events = [None, None]
        slot = 0
        while True:
            batch_rows = np.empty((B, T + 1), dtype=np.int64)
            for r in range(B):
                batch_rows[r], epoch = next(rows)
            state["train_tokens"] += B * T
            if use_cuda:
                if events[slot] is not None:
                    events[slot].synchronize()
                host = hosts[slot]
                host.copy_(torch.from_numpy(batch_rows))
                batch = host.to(device, non_blocking=True)
                events[slot] = torch.cuda.Event()
                events[slot].record()
                slot = 1 - slot
            else:
                batch = torch.from_numpy(batch_rows)
                if device.type != "cpu":
                    batch = batch.to(device)
            yield batch[:, :-1].contiguous(), batch[:, 1:].contiguous(), epoch

    def fail(check, message, **figures):
        if send is not None:
            send("violation", {"check": check, "message": message, "figures": figures})
        raise IntegrityError(f"integrity: {check}: {message}")

    def seal():
        """Called once this module has run: from here on its attributes must not change."""
        snapshot["prepare"] = {k: id(v) for k, v in module_globals.items()}

    def check_untouched(where):
        """Monkeypatched torch (a replaced Tensor method or Module method, a rebound torch name),
        replaced builtins or math functions, rebound attributes of this module, or an active
        torch function/dispatch mode would change prepare's own arithmetic."""
        for name, d in watched.items():
            d = live[name]() if name in live else d
            before = snapshot[name]
            for key, ident in before.items():
                if key not in d or id(d[key]) != ident:
                    fail("monkeypatch", f"{name}.{key} was replaced after prepare was imported ({where})")
            if name in ("torch.Tensor", "prepare") and len(d) != len(before):   # a new name shadows
                added = sorted(set(d) - set(before))[:3]
                fail("monkeypatch", f"{name} gained {', '.join(added)} after prepare was imported ({where})")
        if function_modes() or dispatch_modes():
            fail("monkeypatch", f"a torch function/dispatch mode is active ({where}); "
                                "it would intercept prepare's arithmetic")

    def modules_of(model):
        """Every submodule once, through the _modules dicts themselves: overrides of modules(),
        named_modules(), parameters() ... on the candidate's classes are never consulted."""
        out, seen, stack = [], set(), [("", model)]
        while stack:
            name, m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            if not isinstance(m, Module):
                fail("model", f"submodule {name or '<root>'} is a {type(m).__name__}, not a torch.nn.Module")
            out.append((name, m))
            for key, child in reversed(list(obj_get(m, "_modules").items())):
                if child is not None:
                    stack.append((f"{name}.{key}" if name else key, child))
        return out

    def tensors_of(model):
        for name, m in modules_of(model):
            for kind in ("_parameters", "_buffers"):
                for key, t in obj_get(m, kind).items():
                    if t is not None:
                        yield f"{name}.{key}" if name else key, t

    def fingerprint(model):
        with plain_torch():
            return {name: (id(t), base_clone(base_detach(t))) for name, t in tensors_of(model)}

    def val_rows():
        if state["val_rows"] is None:   # on our own: read from the cache now
            val = _split_paths("val")[0]
            state["val_rows"], state["val_source"] = load_val_rows(val, cache_dir_for(PRESET) / "tokenizer", PRESET)
        return state["val_rows"]

    def evaluate_bpb(model, tokenizer, batch_size):
        """Validation bits per byte of `model` over exactly EVAL_TOKENS tokens of the val split:
        the sum of per-token cross-entropy (nats) over target tokens with a byte length > 0,
        divided by ln(2) * their total byte length. Vocabulary-size independent.

        Calls `model(x)` with the inputs only and computes the cross-entropy from the logits
        itself, in forwards of at most `batch_size` rows (fewer when the fp32 logits would take
        more than LOGITS_BYTES_PER_FORWARD). Puts the model in eval mode and runs under
        torch.inference_mode(). May be called once per process. Along the way it checks that
        the model is causal (changing later tokens never moves earlier logits) and stateless
        (its parameters and buffers do not change, the first batch scores the same at the end);
        a failed check raises IntegrityError. `tokenizer` is accepted for upstream's signature;
        the byte counts are prepare's own."""
        state["eval_calls"] += 1
        if state["eval_calls"] > 1:
            fail("evaluation", f"evaluate_bpb was called {state['eval_calls']} times; one evaluation per run")
        at_call = raw_seconds()
        if send is not None:
            send("eval_start", {"clock_seconds": at_call})
            wait_go()   # the harness reads the child's clock from outside meanwhile
        wall0, thread0, process0 = monotonic(), thread_time(), process_time()
        check_untouched("at the start of evaluate_bpb")
        if not isinstance(model, Module):
            fail("model", f"evaluate_bpb needs a torch.nn.Module, got {type(model).__name__}")
        batch_size = as_index(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        rows_cpu = val_rows()
        n_rows, T = rows_cpu.shape[0], rows_cpu.shape[1] - 1
        tb = token_bytes_cpu if token_bytes_cpu is not None else get_token_bytes("cpu")
        V = tb.numel()
        first = next((t for _, t in tensors_of(model)), None)
        device = first.device if first is not None else torch.device("cpu")
        token_bytes = tb.to(device)
        R = max(1, min(batch_size, n_rows, LOGITS_BYTES_PER_FORWARD // (T * V * 4)))
        chunks = [(i, min(i + R, n_rows)) for i in range(0, n_rows, R)]
        before = fingerprint(model)
        for name, m in modules_of(model):
            try:
                obj_set(m, "training", False)
            except (AttributeError, TypeError) as exc:
                fail("model", f"cannot put {name or 'the model'} in eval mode ({exc})")
        low = any(t.dtype in (torch.bfloat16, torch.float16) for _, (_, t) in before.items()) or \
            (device.type in ("cuda", "cpu") and is_autocast_enabled(device.type))
        atol, rtol = (2e-2, 1e-3) if low else (1e-4, 1e-5)
        rng = Random(int.from_bytes(urandom(8), "little"))   # unpredictable to the model
        timing = dict(kind=clock_kind, forwards=[])

        def forward(x):
            x = x.clone()   # the model gets its own copy: nothing it does to it reaches prepare's rows
            c0, w0 = thread_time(), monotonic()
            out = model(x)
            if cuda:
                torch.cuda.synchronize()
            timing["forwards"].append(thread_time() - c0 if clock_kind == "cpu" else monotonic() - w0)
            check_untouched("after a forward of the model")
            if type(out) is not Tensor:
                fail("logits", f"the model returned a {type(out).__module__}.{type(out).__name__}, "
                               f"not a plain torch.Tensor of logits")
            if tuple(out.shape) != (x.shape[0], T, V) or not out.is_floating_point():
                fail("logits", f"the model returned {out.dtype} logits of shape {tuple(out.shape)}; "
                               f"expected float logits of shape {(x.shape[0], T, V)}")
            return out

        def log_probs(logits):
            # what the model predicts: logits that only shift by a constant predict the same
            with autocast(device_type=device.type, enabled=False):
                return logits.float().log_softmax(-1)

        def nll_of(logits, y):
            with autocast(device_type=device.type, enabled=False):
                logits = logits.float()
                return logits.logsumexp(-1) - logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)

        lo0, hi0 = chunks[0]
        x0 = rows_cpu[lo0:hi0, :T].to(device)
        donor_rows = rows_cpu[chunks[1][0]:chunks[1][0] + (hi0 - lo0), :T] if len(chunks) > 1 else None
        donor = (donor_rows if donor_rows is not None and donor_rows.shape[0] == hi0 - lo0
                 else rows_cpu[lo0:hi0, :T].roll(1, 0)).to(device)
        passes = math.ceil((T - 1) / (hi0 - lo0)) if T > 1 else 0
        offset = rng.randrange(max(T - 1, 1))
        # chunk 0 first (the probes' base); the rest, the causality passes and a re-score of
        # chunk 0 in an order the model cannot predict; a last re-score of chunk 0 at the end
        plan = [("eval", i) for i in range(1, len(chunks))] + [("probe", k) for k in range(passes)] + [("rescore", None)]
        rng.shuffle(plan)
        plan = [("eval", 0)] + plan + [("rescore", None)]
        total_nats = zeros((), dtype=torch.float64, device=device)
        total_bytes = zeros((), dtype=torch.int64, device=device)
        causality = dict(passes=passes, positions=0, worst=0.0, atol=atol, rtol=rtol)
        rescores = []
        base_logp = base_nll = None
        pos = arange(T, device=device).unsqueeze(0)

        def rescore(where="when scored again"):
            """The first batch again: the same predictions, or the model changed meanwhile."""
            logits = forward(x0)
            nll, logp = nll_of(logits, y0), log_probs(logits)
            moved = float((logp - base_logp).abs().max())
            tol = atol + rtol * float(base_logp.abs().max())
            rescores.append(moved)
            if moved > tol:
                fail("statelessness", f"the first evaluation batch scored {float(base_nll.mean()):.6f} "
                                      f"nats/token first and {float(nll.mean()):.6f} {where} (log-probabilities "
                                      f"moved up to {moved:.3g}, tolerance {tol:.2g}): the model changed during "
                                      f"the evaluation", moved=moved, tolerance=tol)
        with inference_mode():
            for kind, index in plan:
                if kind == "eval":
                    lo, hi = chunks[index]
                    x, y = rows_cpu[lo:hi, :T].to(device), rows_cpu[lo:hi, 1:].to(device)
                    logits = forward(x)
                    nll = nll_of(logits, y)
                    nbytes = token_bytes[y]
                    total_nats += where(nbytes > 0, nll.double(), zeros((), dtype=torch.float64, device=device)).sum()
                    total_bytes += nbytes.sum()
                    if index == 0:   # kept for the probes: prepare's own tensor, no reference of the model's
                        base_logp, base_nll, y0 = log_probs(logits), nll, y
                    del logits
                elif kind == "probe":
                    r = arange(hi0 - lo0, device=device)
                    cut = ((offset + index * (hi0 - lo0) + r) % (T - 1)).unsqueeze(1)   # one t per row
                    later = pos > cut
                    x = where(later, donor, x0)
                    same = (x == x0) & (pos == cut + 1)        # the first changed token must differ
                    x = where(same, (x0 + 1) % V, x)
                    moved = (log_probs(forward(x)) - base_logp).abs().amax(-1)
                    tol = atol + rtol * base_logp.abs().amax(-1)
                    bad = (moved > tol) & ~later
                    ratio = float(((moved / tol) * (~later)).max())
                    causality["worst"] = max(causality["worst"], ratio)
                    causality["positions"] += int((hi0 - lo0))
                    if bool(bad.any()):
                        rescore(where="before this probe")   # a model that changed is not (only) acausal
                        row, p = (int(v) for v in bad.nonzero()[0])
                        fail("causality", f"the logits at position {p} of row {row} moved by "
                                          f"{float(moved[row, p]):.3g} (tolerance {float(tol[row, p]):.2g}) when only "
                                          f"the tokens after position {int(cut[row])} changed: the model sees later tokens",
                             position=p, row=row, cut=int(cut[row]), moved=float(moved[row, p]),
                             tolerance=float(tol[row, p]))
                else:
                    rescore()
        after = {name: (id(t), t) for name, t in tensors_of(model)}
        if set(after) != set(before):
            changed = sorted(set(after) ^ set(before))[:3]
            fail("statelessness", f"the model's parameters/buffers changed during the evaluation: {', '.join(changed)} "
                                  f"appeared or disappeared")
        for name, (ident, old) in before.items():
            new_id, new = after[name]
            with plain_torch():
                same = (new_id == ident and new.shape == old.shape and new.dtype == old.dtype
                        and tensor_equal(base_detach(new), old))
            if not same:
                fail("statelessness", f"{name} changed during the evaluation (it must not train or adapt)")
        check_untouched("at the end of evaluate_bpb")
        total_nats, total_bytes = float(total_nats), int(total_bytes)
        val_bpb = total_nats / (math.log(2) * total_bytes) if total_bytes > 0 else float("inf")
        f = timing["forwards"]
        if cuda:
            peak_mb = torch.cuda.max_memory_allocated() / 1024 / 1024
        else:  # peak resident set size (ru_maxrss is KiB on Linux, bytes on macOS)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak_mb = rss / 1024 / 1024 if sys.platform == "darwin" else rss / 1024
        seen, num_params = set(), 0
        for name, m in modules_of(model):
            for t in obj_get(m, "_parameters").values():
                if t is not None and id(t) not in seen:
                    seen.add(id(t))
                    num_params += t.numel()
        record = dict(
            settings=dict(preset=PRESET, budget=budget, eval_tokens=EVAL_TOKENS, max_seq_len=T,
                          measurement_version=MEASUREMENT_VERSION, clock=clock_kind,
                          startup_allowance=allowance, nonce=settings["nonce"] if settings else None),
            val_bpb=val_bpb, total_nats=total_nats, total_bytes=total_bytes, num_tokens=n_rows * T,
            num_rows=n_rows, rows_per_forward=R, batch_size=batch_size, vocab_size=V,
            val_rows_source=state["val_source"],
            clock=dict(kind=clock_kind, budget=budget, startup_allowance=allowance, ticks=state["ticks"],
                       median_step=median(state["intervals"]) if state["intervals"] else None,
                       last_step=state["intervals"][-1] if state["intervals"] else None,
                       created_at=None if state["created"] is None else state["created"] - allowance,
                       seconds_at_eval=at_call - allowance),
            train_tokens=state["train_tokens"], num_params=num_params, peak_memory_mb=peak_mb,
            probes=dict(causality=causality,
                        statelessness=dict(tensors=len(before), rescores=rescores, atol=atol, rtol=rtol)),
            eval=dict(seconds=monotonic() - wall0, thread_cpu_seconds=thread_time() - thread0,
                      process_cpu_seconds=process_time() - process0, threads=torch.get_num_threads(),
                      forwards=len(f), forward_tokens=R * T, forward_seconds_median=median(f),
                      forward_seconds_first=f[0], forward_seconds_max=max(f), forward_seconds_total=sum(f),
                      forward_seconds=[round(v, 4) for v in f[:2000]]))
        if send is not None:
            send("record", record)
        return val_bpb

    return TrainingClock, make_dataloader, evaluate_bpb, seal


TrainingClock, make_dataloader, evaluate_bpb, _seal = _build_runtime(_link, globals())
del _link


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
    print(f"  evaluation rows ({info['val_rows']}): {PRESETS[info['preset']]['eval_tokens']:,} tokens in {VAL_ROWS}")
    print(f"  done in {info['seconds']:.1f}s")
    return 0


_seal()   # every attribute of this module is final now (evaluate_bpb checks it)

if __name__ == "__main__":
    sys.exit(main())
