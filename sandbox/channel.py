"""The record channel: how prepare, inside the candidate's process, tells the harness what it
measured, so that nothing the candidate writes can pass for it.

STDLIB ONLY and import-free of the project: this file ships next to harness.py in every bundle.

Two pipes per execution, created by the harness:
  settings pipe  harness -> child: one JSON line of settings (preset, budget, eval size, data
                 paths, a fresh random key and nonce), read by the child's bootstrap before any
                 candidate code runs; afterwards only `go` lines (the harness's answer to eval_start).
  message pipe   child -> harness: sealed JSON lines, one per message, in order.

A sealed line is {"payload": {"v", "nonce", "seq", "kind", "body"}, "mac": HMAC-SHA256(key, payload)}.
The harness accepts a message only when its MAC verifies, its nonce is this execution's and its
seq is the next one; anything else on the pipe is an integrity failure. The key lives only in
the signing closure handed to prepare (not in the environment, not in a file, not in a module
attribute), so code that writes to the pipe, or a file next to it, cannot forge a record.

What it does not cover: code in the same process that reads the key out of the closure (frame,
closure or gc introspection, ctypes memory reads). That is the static checker's to forbid.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os

PROTOCOL = 1
MAX_LINE_BYTES = 4 << 20          # a record is a few KB; anything longer is not ours
GO = b"go\n"                      # the harness's answer to eval_start (it has read the clock)


class ChannelError(ValueError):
    """A line on the message pipe that is not an authentic message of this execution."""


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def mac(key: bytes, payload: dict) -> str:
    return hmac.new(key, canonical(payload), hashlib.sha256).hexdigest()


def seal(key: bytes, nonce: str, seq: int, kind: str, body: dict) -> bytes:
    payload = {"v": PROTOCOL, "nonce": nonce, "seq": seq, "kind": kind, "body": body}
    return canonical({"payload": payload, "mac": mac(key, payload)}) + b"\n"


class Opener:
    """The harness's side: verifies lines in order. `open(line)` -> (kind, body)."""

    def __init__(self, key: bytes, nonce: str):
        self._key, self._nonce, self._seq = key, nonce, 0

    def open(self, line: bytes) -> tuple[str, dict]:
        if len(line) > MAX_LINE_BYTES:
            raise ChannelError(f"a line of {len(line)} bytes (limit {MAX_LINE_BYTES})")
        try:
            message = json.loads(line)
            payload, tag = message["payload"], message["mac"]
            kind, body, seq, nonce = payload["kind"], payload["body"], payload["seq"], payload["nonce"]
        except (ValueError, TypeError, KeyError) as exc:
            raise ChannelError(f"not a sealed message ({type(exc).__name__}: {str(exc)[:80]}): "
                               f"{line[:120]!r}") from None
        if not isinstance(tag, str) or not hmac.compare_digest(tag, mac(self._key, payload)):
            raise ChannelError(f"a {kind!r} message whose MAC does not verify (forged or altered)")
        if nonce != self._nonce:
            raise ChannelError(f"a {kind!r} message of another execution (nonce {nonce!r})")
        if seq != self._seq:
            raise ChannelError(f"message {kind!r} has sequence number {seq}, expected {self._seq}")
        if not isinstance(body, dict):
            raise ChannelError(f"message {kind!r} has a body of type {type(body).__name__}")
        self._seq += 1
        return kind, body


def make_link(settings: dict, message_fd: int, settings_fd: int):
    """The child's side: (send, wait_go) closures. The key is captured here and nowhere else;
    the caller drops it from `settings` before handing anything on."""
    key, nonce = bytes.fromhex(settings.pop("key")), settings["nonce"]
    counter = [0]

    def send(kind: str, body: dict) -> None:
        data = seal(key, nonce, counter[0], kind, body)
        counter[0] += 1
        view = memoryview(data)
        while view:
            view = view[os.write(message_fd, view):]

    def wait_go() -> None:
        """Block until the harness answers (it reads the clock from outside meanwhile)."""
        got = b""
        while not got.endswith(b"\n"):
            chunk = os.read(settings_fd, 1)
            if not chunk:
                raise RuntimeError("the harness closed the settings pipe")
            got += chunk
        if got != GO:
            raise RuntimeError(f"unexpected answer from the harness: {got[:40]!r}")

    return send, wait_go


def read_settings(fd: int) -> dict:
    """One JSON line from the settings pipe (read byte by byte: nothing after it is consumed)."""
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            raise RuntimeError("settings pipe closed before the settings line")
        buf += chunk
        if len(buf) > MAX_LINE_BYTES:
            raise RuntimeError("settings line too long")
    return json.loads(bytes(buf))
