"""A strict AWS in front of moto: every request a test sends through boto3 is checked against the
service model botocore ships (the shapes AWS's SDKs are generated from) and the few documented
rules the model cannot express. moto checks none of it, so without this layer a request that AWS
refuses with a ValidationException passes every test.

What is checked, for every member of every request:
  * structures: required members present, no unknown members, unions with exactly one member;
  * types: string, integer/long (not bool), float/double, boolean, blob, timestamp, list, map;
  * strings: enum values, min/max length, the model's pattern matched against the WHOLE value
    (AWS reports e.g. "Member must satisfy regular expression pattern: [\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*"
    for a tag value with a comma although the pattern carries no anchors);
  * numbers: min/max value; lists and maps: min/max entries, and every element, key and value;
  * documented rules the shapes cannot carry (RULES below, each with its source).
Patterns are Java regexes (the services are Java): `java_regex` translates them for the `regex`
package (installed with tiktoken, a project dependency) keeping Java's meaning: \\p{L}/\\p{Z}/\\p{N}
are Unicode categories, \\w \\d \\s \\b and the POSIX classes (\\p{Alnum}...) are US-ASCII, and `.`
stops at every Java line terminator. A construct it does not know is an error, never a guess.
Lengths: the strictest reading -- max counts UTF-16 code units (Java's String.length()), min
counts code points.

Use:
  * `validate_request(service, operation, params)` -> [Violation]: a request dict that is never
    sent (e.g. the dry run's create_training_job.json);
  * the `strict_aws` fixture: while a test runs, every botocore client created in the process
    checks each call at `before-parameter-build` (registered first, so it sees exactly what the
    caller passed). A violation is answered as AWS answers it -- a ClientError with the service's
    validation error code, naming the member and the constraint -- and recorded; the fixture
    fails the test at teardown with every recorded violation, including ones the code under test
    caught and swallowed. A test that sends bad requests on purpose takes them with `take()`.
    `checked` counts the requests validated per "service.Operation", so a test can prove the
    layer saw its calls. STRICT_AWS_MODE=record records without raising (a survey that does not
    stop at the first refusal).
  * switched on for every test that uses the local AWS (`aws_server`) by the autouse fixture
    `strict_aws_everywhere`: either run pytest with `-p tests.strict_aws`, or add this one line
    to tests/aws_fixtures.py:
        from tests.strict_aws import strict_aws, strict_aws_everywhere  # noqa: F401  (strict AWS)
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import threading
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable

import botocore.session
import pytest
import regex
from botocore.exceptions import ClientError
from botocore.model import OperationModel, Shape

__all__ = ["Violation", "StrictAWS", "validate_request", "java_regex", "UnsupportedPattern", "RULES",
           "strict_aws", "strict_aws_everywhere"]


# ----- Java regex -> `regex` ------------------------------------------------------------------------
class UnsupportedPattern(ValueError):
    """A Java regex construct this translator does not model; extend it rather than guess."""


# Java's predefined and POSIX classes are US-ASCII (no UNICODE_CHARACTER_CLASS flag), as set contents.
_ASCII_SETS = {
    "d": "0-9", "w": "a-zA-Z0-9_", "s": " \\t\\n\\x0B\\f\\r",
    "Lower": "a-z", "Upper": "A-Z", "ASCII": "\\x00-\\x7F", "Alpha": "a-zA-Z", "Digit": "0-9",
    "Alnum": "a-zA-Z0-9", "Punct": "\\x21-\\x2F\\x3A-\\x40\\x5B-\\x60\\x7B-\\x7E", "Graph": "\\x21-\\x7E",
    "Print": "\\x20-\\x7E", "Blank": " \\t", "Cntrl": "\\x00-\\x1F\\x7F", "XDigit": "0-9a-fA-F",
    "Space": " \\t\\n\\x0B\\f\\r",
}
_UNICODE_CATEGORIES = frozenset(
    "L Lu Ll Lt Lm Lo M Mn Mc Me N Nd Nl No P Pc Pd Ps Pe Pi Pf Po S Sm Sc Sk So Z Zs Zl Zp "
    "C Cc Cf Cs Co Cn".split())
_LITERAL_ESCAPES = frozenset("\\.-/+*?()[]{}|^$ _:#=@!,&'\"<>%~`;")
_CONTROL_ESCAPES = {"t": "\\t", "n": "\\n", "r": "\\r", "f": "\\f", "a": "\\a", "e": "\\x1B"}
_JAVA_DOT = "[^\\n\\r\\u0085\\u2028\\u2029]"       # Java's `.` stops at every line terminator
_WORD = "[a-zA-Z0-9_]"
_JAVA_WORD_BOUNDARY = f"(?:(?<={_WORD})(?!{_WORD})|(?<!{_WORD})(?={_WORD}))"


def _set(content: str, negated: bool) -> str:
    return f"[{'^' if negated else ''}{content}]"


@lru_cache(maxsize=None)
def java_regex(pattern: str) -> "regex.Pattern[str]":
    """Compile a Java pattern (as the AWS service model writes it) with Java's meaning.

    The `regex` package's VERSION1 syntax is used because it has Java's nested-class union and
    `&&` intersection; its own set operators `--`, `||`, `~~` do not exist in Java and are refused."""
    out: list[str] = []
    i, depth = 0, 0          # depth: nesting of character classes
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 >= len(pattern):
                raise UnsupportedPattern(f"trailing backslash in {pattern!r}")
            e = pattern[i + 1]
            if e in "pP":
                if pattern[i + 2:i + 3] != "{":
                    raise UnsupportedPattern(f"\\{e} without braces in {pattern!r}")
                end = pattern.index("}", i)
                name = pattern[i + 3:end]
                negated = e == "P"
                if name in _ASCII_SETS:
                    out.append(_set(_ASCII_SETS[name], negated))
                elif name in _UNICODE_CATEGORIES:
                    out.append(f"\\{e}{{{name}}}")
                else:
                    raise UnsupportedPattern(f"\\{e}{{{name}}} in {pattern!r}")
                i = end + 1
                continue
            if e in "dws":
                out.append(_set(_ASCII_SETS[e], False))
            elif e in "DWS":
                out.append(_set(_ASCII_SETS[e.lower()], True))
            elif e == "b" and depth == 0:
                out.append(_JAVA_WORD_BOUNDARY)
            elif e == "u":
                code = pattern[i + 2:i + 6]
                if len(code) != 4 or not all(ch in "0123456789abcdefABCDEF" for ch in code):
                    raise UnsupportedPattern(f"bad \\u escape in {pattern!r}")
                high = int(code, 16)
                low = pattern[i + 6:i + 12]
                if 0xD800 <= high <= 0xDBFF and regex.fullmatch(r"\\u[dD][c-fC-F][0-9a-fA-F]{2}", low):
                    # Java patterns run on UTF-16: \uD800\uDC00 is ONE code point (U+10000)
                    point = 0x10000 + ((high - 0xD800) << 10) + (int(low[2:], 16) - 0xDC00)
                    out.append(f"\\U{point:08X}")
                    i += 12
                    continue
                out.append(f"\\u{code}")
                i += 6
                continue
            elif e == "x":
                code = pattern[i + 2:i + 4]
                if len(code) != 2 or not all(ch in "0123456789abcdefABCDEF" for ch in code):
                    raise UnsupportedPattern(f"\\x{{...}} or bad \\x escape in {pattern!r}")
                out.append(f"\\x{code}")
                i += 4
                continue
            elif e in _CONTROL_ESCAPES:
                out.append(_CONTROL_ESCAPES[e])
            elif e in _LITERAL_ESCAPES:
                out.append("\\" + e)
            elif e == "A" and depth == 0:
                out.append("\\A")
            elif e == "z" and depth == 0:
                out.append("\\Z")          # Python's \Z is Java's \z (very end of input)
            elif e.isdigit() and depth == 0 and e != "0":
                out.append("\\" + e)        # a back-reference
            else:                           # \Q..\E, \h, \v, \R, \X, \Z, \G, \c, \0, \k, \N ...
                raise UnsupportedPattern(f"\\{e} in {pattern!r}")
            i += 2
            continue
        if c == "[":
            depth += 1
            out.append("[")
            i += 1
            if pattern[i:i + 1] == "^":
                out.append("^")
                i += 1
            if pattern[i:i + 1] == "]":     # Java: a leading ] is a literal
                out.append("\\]")
                i += 1
            continue
        if c == "]" and depth:
            depth -= 1
            out.append("]")
            i += 1
            continue
        if depth and pattern[i:i + 2] in ("--", "||", "~~"):
            raise UnsupportedPattern(f"{pattern[i:i + 2]!r} inside a class in {pattern!r} (a set operator "
                                     "in `regex`, literal in Java)")
        if c == "." and depth == 0:
            out.append(_JAVA_DOT)
            i += 1
            continue
        out.append(c)
        i += 1
    if depth:
        raise UnsupportedPattern(f"unclosed character class in {pattern!r}")
    try:
        return regex.compile("".join(out), regex.VERSION1)
    except regex.error as exc:
        raise UnsupportedPattern(f"{pattern!r} -> {''.join(out)!r}: {exc}") from None


# ----- violations -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Violation:
    service: str
    operation: str
    path: str            # e.g. Tags[2].Value, Environment{AUTORESEARCH_X}, HyperParameters<key>
    constraint: str      # e.g. "pattern ([\p{L}\p{Z}\p{N}_.:/=+\-@]*)", "max length 63", "required"
    value: str = ""      # repr of the offending value, shortened

    def __str__(self) -> str:
        got = f" (got {self.value})" if self.value else ""
        return f"{self.service}.{self.operation}: {self.path}: {self.constraint}{got}"


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class _Walker:
    """Checks one request against its operation's input shape."""

    def __init__(self, service: str, operation: str):
        self.service, self.operation = service, operation
        self.found: list[Violation] = []

    def bad(self, path: str, constraint: str, value: Any = None) -> None:
        self.found.append(Violation(self.service, self.operation, path or "<request>", constraint,
                                    "" if value is None else _short(value)))

    def check(self, shape: Shape, value: Any, path: str) -> None:
        kind = shape.type_name
        meta = shape.metadata
        if value is None:
            self.bad(path, f"null is not a valid {kind}")
            return
        if kind == "structure":
            self._structure(shape, value, path)
        elif kind == "list":
            if not isinstance(value, (list, tuple)):
                self.bad(path, f"type: expected a list, got {type(value).__name__}", value)
                return
            self._count(meta, len(value), path, "entries")
            for n, item in enumerate(value):
                self.check(shape.member, item, f"{path}[{n}]")
        elif kind == "map":
            if not isinstance(value, dict):
                self.bad(path, f"type: expected a map, got {type(value).__name__}", value)
                return
            self._count(meta, len(value), path, "entries")
            for key, item in value.items():
                self.check(shape.key, key, f"{path}<key {key!r}>")
                self.check(shape.value, item, f"{path}{{{key}}}")
        elif kind == "string":
            self._string(shape, value, path)
        elif kind in ("integer", "long"):
            if isinstance(value, bool) or not isinstance(value, int):
                self.bad(path, f"type: expected an {kind}, got {type(value).__name__}", value)
                return
            self._range(meta, value, path)
        elif kind in ("float", "double"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.bad(path, f"type: expected a {kind}, got {type(value).__name__}", value)
                return
            self._range(meta, value, path)
        elif kind == "boolean":
            if not isinstance(value, bool):
                self.bad(path, f"type: expected a boolean, got {type(value).__name__}", value)
        elif kind == "blob":
            if isinstance(value, (bytes, bytearray, str)):
                size = len(value.encode() if isinstance(value, str) else value)
                self._count(meta, size, path, "bytes")
            elif not hasattr(value, "read"):
                self.bad(path, f"type: expected bytes or a file-like object, got {type(value).__name__}", value)
        elif kind == "timestamp":
            if not isinstance(value, (dt.datetime, dt.date, str, int, float)) or isinstance(value, bool):
                self.bad(path, f"type: expected a timestamp, got {type(value).__name__}", value)
        # "document" members are free-form JSON by definition

    def _structure(self, shape: Any, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            self.bad(path, f"type: expected a structure (dict), got {type(value).__name__}", value)
            return
        prefix = f"{path}." if path else ""
        for name in shape.required_members:
            if name not in value:
                self.bad(prefix + name, "required member missing")
        for name, item in value.items():
            if name not in shape.members:
                self.bad(prefix + name, f"unknown member (valid: {', '.join(sorted(shape.members))})")
                continue
            self.check(shape.members[name], item, prefix + name)
        if shape.metadata.get("union"):
            present = [k for k, v in value.items() if v is not None]
            if len(present) != 1:
                self.bad(path, f"union: exactly one member must be set, got {present or 'none'}")

    def _string(self, shape: Any, value: Any, path: str) -> None:
        if not isinstance(value, str):
            self.bad(path, f"type: expected a string, got {type(value).__name__}", value)
            return
        meta = shape.metadata
        if shape.enum and value not in shape.enum:
            listed = shape.enum if len(shape.enum) <= 12 else [*shape.enum[:12], f"... {len(shape.enum)} values"]
            self.bad(path, f"enum: not one of {listed}", value)
        if "min" in meta and len(value) < meta["min"]:
            self.bad(path, f"min length {meta['min']}", value)
        if "max" in meta and _utf16_len(value) > meta["max"]:
            self.bad(path, f"max length {meta['max']} (is {_utf16_len(value)})", value)
        pattern = meta.get("pattern")
        if pattern is not None and not java_regex(pattern).fullmatch(value):
            self.bad(path, f"pattern {pattern}", value)

    def _count(self, meta: dict, n: int, path: str, what: str) -> None:
        if "min" in meta and n < meta["min"]:
            self.bad(path, f"at least {meta['min']} {what} (has {n})")
        if "max" in meta and n > meta["max"]:
            self.bad(path, f"at most {meta['max']} {what} (has {n})")

    def _range(self, meta: dict, value: float, path: str) -> None:
        if "min" in meta and value < meta["min"]:
            self.bad(path, f"min value {meta['min']}", value)
        if "max" in meta and value > meta["max"]:
            self.bad(path, f"max value {meta['max']}", value)


# ----- documented rules the shapes cannot carry -------------------------------------------------------
MAX_RUNTIME_LIMIT_S = 28 * 24 * 3600


def _create_training_job(params: dict, bad: Callable[[str, str, Any], None]) -> None:
    serverless = "ServerlessJobConfig" in params
    if not serverless:
        # Required in every model before serverless jobs relaxed the shape (e.g. Paws::SageMaker::
        # CreateTrainingJob, pub.dev aws_sagemaker_api createTrainingJob): AWS still needs them for a
        # job that runs our own image.
        for name in ("AlgorithmSpecification", "ResourceConfig", "StoppingCondition"):
            if name not in params:
                bad(name, "required for a non-serverless training job", None)
        rc = params.get("ResourceConfig") or {}
        if "ResourceConfig" in params:
            if not rc.get("InstanceType") and not rc.get("InstanceGroups"):
                bad("ResourceConfig.InstanceType", "required (or InstanceGroups)", None)
            if not rc.get("InstanceGroups") and not (isinstance(rc.get("InstanceCount"), int)
                                                     and rc["InstanceCount"] >= 1):
                bad("ResourceConfig.InstanceCount", "min value 1 for a non-serverless job", rc.get("InstanceCount"))
            if not (isinstance(rc.get("VolumeSizeInGB"), int) and rc["VolumeSizeInGB"] >= 1):
                bad("ResourceConfig.VolumeSizeInGB", "min value 1 for a non-serverless job", rc.get("VolumeSizeInGB"))
        algo = params.get("AlgorithmSpecification") or {}
        if "AlgorithmSpecification" in params and bool(algo.get("TrainingImage")) == bool(algo.get("AlgorithmName")):
            bad("AlgorithmSpecification", "exactly one of TrainingImage and AlgorithmName", None)
    stop = params.get("StoppingCondition") or {}
    max_run, max_wait = stop.get("MaxRuntimeInSeconds"), stop.get("MaxWaitTimeInSeconds")
    # StoppingCondition.MaxRuntimeInSeconds documentation in the model: "The maximum value is 28 days."
    if isinstance(max_run, int) and max_run > MAX_RUNTIME_LIMIT_S:
        bad("StoppingCondition.MaxRuntimeInSeconds", f"max value {MAX_RUNTIME_LIMIT_S} (28 days)", max_run)
    if params.get("EnableManagedSpotTraining"):
        # Managed spot training guide: "Set EnableManagedSpotTraining to True and specify the
        # MaxWaitTimeInSeconds"; the model: MaxWait "must be equal to or greater than MaxRuntimeInSeconds".
        if max_wait is None:
            bad("StoppingCondition.MaxWaitTimeInSeconds", "required with EnableManagedSpotTraining", None)
        elif isinstance(max_run, int) and isinstance(max_wait, int) and max_wait < max_run:
            bad("StoppingCondition.MaxWaitTimeInSeconds", f">= MaxRuntimeInSeconds ({max_run})", max_wait)
    elif max_wait is not None:
        bad("StoppingCondition.MaxWaitTimeInSeconds", "only valid with EnableManagedSpotTraining", max_wait)
    # CreateTrainingJobRequest.HyperParameters documentation: "Each key and value is limited to 256
    # characters" (the shapes allow 2500 for values: the stricter, documented limit applies here).
    for key, value in (params.get("HyperParameters") or {}).items():
        if isinstance(value, str) and len(value) > 256:
            bad(f"HyperParameters{{{key}}}", "max length 256 (CreateTrainingJob documentation)", value)
    names = [c.get("ChannelName") for c in params.get("InputDataConfig") or [] if isinstance(c, dict)]
    for name in {n for n in names if names.count(n) > 1}:
        bad("InputDataConfig", f"channel names must be unique ({name!r} repeats)", None)
    _unique_tag_keys(params, bad)


def _unique_tag_keys(params: dict, bad: Callable[[str, str, Any], None]) -> None:
    # Tag.Key documentation: "Tag keys must be unique per resource."
    keys = [t.get("Key") for t in params.get("Tags") or [] if isinstance(t, dict)]
    for key in {k for k in keys if keys.count(k) > 1}:
        bad("Tags", f"tag keys must be unique per resource ({key!r} repeats)", None)


def _bucket_name(name: Any, bad: Callable[[str, str, Any], None]) -> None:
    """General purpose bucket naming rules (https://docs.aws.amazon.com/AmazonS3/latest/userguide/
    bucketnamingrules.html). botocore checks only the characters; S3 refuses the rest."""
    if not isinstance(name, str):
        return
    problems = []
    if not 3 <= len(name) <= 63:
        problems.append("3 to 63 characters")
    if not regex.fullmatch(r"[a-z0-9][a-z0-9.\-]*[a-z0-9]", name):
        problems.append("lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit")
    if ".." in name:
        problems.append("no two adjacent periods")
    try:
        ipaddress.IPv4Address(name)
        problems.append("not formatted as an IP address")
    except ValueError:
        pass
    if name.startswith(("xn--", "sthree-", "amzn-s3-demo-")):
        problems.append("no reserved prefix (xn--, sthree-, amzn-s3-demo-)")
    if name.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3")):
        problems.append("no reserved suffix (-s3alias, --ol-s3, .mrap, --x-s3)")
    for problem in problems:
        bad("Bucket", f"bucket naming rule: {problem}", name)


def _s3_object(params: dict, bad: Callable[[str, str, Any], None]) -> None:
    key = params.get("Key")
    # Object key names: "up to 1,024 bytes long" in UTF-8 (S3 user guide, object-keys).
    if isinstance(key, str) and len(key.encode()) > 1024:
        bad("Key", "max 1024 bytes of UTF-8", key)
    meta = params.get("Metadata")
    # User-defined metadata: at most 2 KB per PUT, counted as UTF-8 bytes of keys and values.
    if isinstance(meta, dict):
        size = sum(len(str(k).encode()) + len(str(v).encode()) for k, v in meta.items())
        if size > 2048:
            bad("Metadata", f"user-defined metadata max 2 KB (is {size} bytes)", None)


def _json_document(member: str) -> Callable[[dict, Callable[[str, str, Any], None]], None]:
    def rule(params: dict, bad: Callable[[str, str, Any], None]) -> None:
        doc = params.get(member)
        if isinstance(doc, str):
            try:
                json.loads(doc)
            except ValueError as exc:
                bad(member, f"MalformedPolicyDocument: not JSON ({exc})", doc)
    return rule


def _one_log_group(params: dict, bad: Callable[[str, str, Any], None]) -> None:
    # DescribeLogStreams / GetLogEvents / FilterLogEvents documentation: "You must include one of
    # these two parameters, but you can't include both."
    given = [k for k in ("logGroupName", "logGroupIdentifier") if k in params]
    if len(given) != 1:
        bad("logGroupName", f"exactly one of logGroupName and logGroupIdentifier (got {given or 'neither'})", None)


RULES: dict[tuple[str, str], list[Callable[[dict, Callable[[str, str, Any], None]], None]]] = {
    ("logs", "DescribeLogStreams"): [_one_log_group],
    ("logs", "GetLogEvents"): [_one_log_group],
    ("logs", "FilterLogEvents"): [_one_log_group],
    ("sagemaker", "CreateTrainingJob"): [_create_training_job],
    ("sagemaker", "AddTags"): [_unique_tag_keys],
    ("s3", "CreateBucket"): [lambda p, bad: _bucket_name(p.get("Bucket"), bad)],
    ("s3", "PutObject"): [_s3_object],
    ("s3", "CreateMultipartUpload"): [_s3_object],
    ("iam", "CreateRole"): [_json_document("AssumeRolePolicyDocument")],
    ("iam", "PutRolePolicy"): [_json_document("PolicyDocument")],
}


# ----- entry points -----------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _service_model(service: str) -> Any:
    return botocore.session.get_session().get_service_model(service)


def check_operation(operation_model: OperationModel, params: dict) -> list[Violation]:
    service = operation_model.service_model.service_name
    walker = _Walker(service, operation_model.name)
    shape = operation_model.input_shape
    if shape is None:
        if params:
            walker.bad("", f"{operation_model.name} takes no parameters", params)
        return walker.found
    walker.check(shape, params, "")
    for rule in RULES.get((service, operation_model.name), ()):
        rule(params, lambda path, constraint, value: walker.bad(path, constraint, value))
    return walker.found


def validate_request(service: str, operation: str, params: dict) -> list[Violation]:
    """Violations of `params` as the request of `service` `operation` ("sagemaker", "CreateTrainingJob")."""
    return check_operation(_service_model(service).operation_model(operation), params)


# What each service answers a request its validation refuses (the code a client sees).
_ERROR_CODES = {"iam": "ValidationError", "sts": "ValidationError", "logs": "InvalidParameterException",
                "ecr": "InvalidParameterException", "service-quotas": "IllegalArgumentException",
                "s3": "InvalidRequest"}


def _aws_message(found: list[Violation]) -> str:
    parts = [f"Value {v.value or 'null'} at '{v.path}' failed to satisfy constraint: {v.constraint}" for v in found]
    return f"{len(found)} validation error{'s' if len(found) > 1 else ''} detected: " + "; ".join(parts)


class StrictAWS:
    """Validates every call of every botocore client created while it is installed."""

    def __init__(self, *, raise_errors: bool = True):
        self.raise_errors = raise_errors
        self.violations: list[Violation] = []
        self.checked: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._id = f"strict-aws-{id(self)}"

    def on_params(self, params: dict, model: OperationModel, **_: Any) -> None:
        found = check_operation(model, params)
        with self._lock:
            self.checked[f"{model.service_model.service_name}.{model.name}"] += 1
            self.violations.extend(found)
        if found and self.raise_errors:
            code = _ERROR_CODES.get(model.service_model.service_name, "ValidationException")
            raise ClientError({"Error": {"Code": code, "Message": _aws_message(found)},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, model.name)

    def attach(self, client: Any) -> Any:
        client.meta.events.register_first("before-parameter-build", self.on_params, unique_id=self._id)
        return client

    def install(self, monkeypatch: pytest.MonkeyPatch) -> "StrictAWS":
        """Every client botocore creates from now on (boto3.client, Session.client, resources,
        s3transfer) is attached; monkeypatch undoes it."""
        original = botocore.session.Session.create_client
        strict = self

        def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
            return strict.attach(original(session, *args, **kwargs))

        monkeypatch.setattr(botocore.session.Session, "create_client", create_client)
        return self

    def take(self) -> list[Violation]:
        """The violations so far, forgotten (for a test that provokes them on purpose)."""
        with self._lock:
            found, self.violations = self.violations, []
        return found

    def report(self) -> str:
        lines = [str(v) for v in self.violations]
        return f"{len(lines)} AWS request violation(s) of botocore's service model:\n  " + "\n  ".join(lines)


def _mode_raises() -> bool:
    return os.environ.get("STRICT_AWS_MODE", "raise").strip().lower() != "record"


@pytest.fixture
def strict_aws(monkeypatch: pytest.MonkeyPatch) -> Iterable[StrictAWS]:
    """The strict layer for one test (see the module docstring)."""
    strict = StrictAWS(raise_errors=_mode_raises()).install(monkeypatch)
    yield strict
    if strict.violations:
        pytest.fail(strict.report(), pytrace=False)


@pytest.fixture(autouse=True)
def strict_aws_everywhere(request: pytest.FixtureRequest) -> None:
    """Turns `strict_aws` on for every test that uses the local AWS server."""
    if "aws_server" in request.fixturenames:
        request.getfixturevalue("strict_aws")
