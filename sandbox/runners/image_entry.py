"""Entry point of the pre-built training image (docker/Dockerfile). STDLIB ONLY.

SageMaker starts the container as `<image> train` after copying every input channel into
/opt/ml/input/data/<channel>/. The `code` channel holds the job's sourcedir.tar.gz (the same
tarball the toolkit would download, see sagemaker_request.pack_source): unpack it into
/opt/ml/code and run its sm_entry.py there, as the toolkit would, but without any network.
A missing or unreadable tarball is a job failure written where SageMaker reads FailureReason.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

CODE_CHANNEL = Path(os.environ.get("SM_CHANNEL_CODE", "/opt/ml/input/data/code"))
CODE_DIR = Path("/opt/ml/code")
FAILURE = Path("/opt/ml/output/failure")


def fail(message: str) -> int:
    FAILURE.parent.mkdir(parents=True, exist_ok=True)
    FAILURE.write_text(message)
    print(message, file=sys.stderr, flush=True)
    return 1


def main(code_channel: Path = CODE_CHANNEL, code_dir: Path = CODE_DIR) -> int:
    tarballs = sorted(code_channel.glob("*.tar.gz"))
    if len(tarballs) != 1:
        return fail(f"image_entry: expected one sourcedir .tar.gz in {code_channel}, found "
                    f"{[p.name for p in tarballs]} (the job's `code` input channel)")
    code_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tarballs[0], mode="r:gz") as tar:
            tar.extractall(code_dir, filter="data")
    except (tarfile.TarError, OSError) as exc:
        return fail(f"image_entry: cannot unpack {tarballs[0]}: {exc}")
    if not (code_dir / "sm_entry.py").is_file():
        return fail(f"image_entry: {tarballs[0].name} holds no sm_entry.py")
    os.environ.setdefault("SM_CHANNEL_CODE", str(code_channel))
    return subprocess.call([sys.executable, "sm_entry.py"], cwd=code_dir)


if __name__ == "__main__":
    sys.exit(main())
