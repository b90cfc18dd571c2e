"""The strict AWS layer itself (tests/strict_aws.py): Java patterns keep their Java meaning, every
kind of constraint in botocore's service model is enforced with the member path named, the
documented cross-field rules hold, and the hook catches every client (even a violation the code
under test swallows fails the test)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

pytest.register_assert_rewrite("tests.aws_fixtures")

from tests.aws_fixtures import REGION  # noqa: E402
from tests.strict_aws import (  # noqa: E402,F401  (strict_aws: the fixture, for this module only)
    StrictAWS, UnsupportedPattern, java_regex, strict_aws, validate_request,
)

pytest_plugins = ("tests.aws_fixtures",)   # fixtures: aws_server, aws

PROJECT = Path(__file__).resolve().parents[1]
ROLE = "arn:aws:iam::123456789012:role/autoresearch-sagemaker"
TAG_PATTERN = r"([\p{L}\p{Z}\p{N}_.:/=+\-@]*)"


def constraints(found) -> list[tuple[str, str]]:
    return [(v.path, v.constraint) for v in found]


def good_training_job(**overrides) -> dict:
    request = {
        "TrainingJobName": "ar-t1-e1-a1",
        "RoleArn": ROLE,
        "AlgorithmSpecification": {
            "TrainingImage": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.8.0-gpu-py312",
            "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": "val_bpb", "Regex": r"val_bpb:\s+([0-9.]+)"}],
        },
        "HyperParameters": {"sagemaker_program": '"sm_entry.py"', "sagemaker_region": '"us-east-1"'},
        "InputDataConfig": [{"ChannelName": "data", "InputMode": "File", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": "s3://ar-test-bucket/autoresearch/data/gpu/data/",
            "S3DataDistributionType": "FullyReplicated"}}}],
        "OutputDataConfig": {"S3OutputPath": "s3://ar-test-bucket/autoresearch/runs/t1/ar-t1-e1/output"},
        "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
        "StoppingCondition": {"MaxRuntimeInSeconds": 1800, "MaxWaitTimeInSeconds": 3600},
        "EnableManagedSpotTraining": True,
        "Environment": {"AUTORESEARCH_PRESET": "gpu", "PYTHONUNBUFFERED": "1"},
        "Tags": [{"Key": "run", "Value": "t1"}, {"Key": "execution", "Value": "g1-e1 g1-e2"}],
    }
    request.update(overrides)
    return request


# ----- Java patterns --------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern, good, bad", [
    # the TagValue pattern: Unicode letters, separators and numbers, and _.:/=+-@ -- no comma, no &
    (TAG_PATTERN, ["", "run-1", "exp.1", "é 日本 x", "a_b.c:d/e=f+g-h@i", "١٢٣"], ["a,b", "a&b", "a\nb", "a;b"]),
    # TrainingJobName: unanchored in the model, matched whole by the service
    (r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", ["ar-t1-e1-a1", "a", "a--b", "x" * 63], ["ar_t1", "-a", "a-", "x" * 64, "a.b"]),
    # \w and \d are ASCII in Java; \p{Alnum} is POSIX (ASCII)
    (r"[\w+=,.@-]+", ["autoresearch-sagemaker", "a+b=c,d.e@f"], ["rôle", "a b", ""]),
    (r"arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+", [ROLE], ["arn:aws:iam::١٢٣٤٥٦٧٨٩٠١٢:role/x"]),
    (r"arn:[\p{Alnum}\-]+:lambda:[\p{Alnum}\-]+:[0-9]{12}:function:.*",
     ["arn:aws:lambda:us-east-1:123456789012:function:f"], ["arn:awsé:lambda:us-east-1:123456789012:function:f"]),
    # `.` stops at every Java line terminator, not only \n
    (r".*", ["a b", ""], ["a\rb", "a\nb", "a\u2028b", "a\u0085b"]),
    (r"[\S\s]*", ["a\nb\r\u2028", ""], []),
    # patterns that do carry anchors
    (r"^[a-zA-Z0-9/+]*={0,2}$", ["abc=", "ab+/"], ["abc=\n", "a=b"]),
    # a UTF-16 surrogate pair range is the astral planes
    (r"[\u0020-\uD7FF\uE000-\uFFFD\uD800\uDC00-\uDBFF\uDFFF\t]*", ["ab😀\t"], ["a\x01"]),
    # Java's \b, ASCII word characters
    (r"((25[0-5]|(2[0-4]|1\d|[1-9]|)\d)\.?\b){4}", ["10.0.0.1", "255.255.255.255"], ["10.0.0", "10.0.0.256"]),
    # S3Uri
    (r"(https|s3)://([^/]+)/?(.*)", ["s3://b/k", "s3://b"], ["s3:/b/k", "file:///x", "S3://b/k"]),
])
def test_java_patterns_keep_their_java_meaning(pattern, good, bad):
    compiled = java_regex(pattern)
    assert [v for v in good if not compiled.fullmatch(v)] == []
    assert [v for v in bad if compiled.fullmatch(v)] == []


@pytest.mark.parametrize("pattern", [r"\Qa.b\E", r"\p{IsLatin}+", r"[a--b]", r"\h+", r"x\Z", r"[abc"])
def test_unknown_java_constructs_are_refused_not_guessed(pattern):
    with pytest.raises(UnsupportedPattern):
        java_regex(pattern)


def test_every_pattern_of_the_services_we_call_translates():
    import botocore.session
    session = botocore.session.get_session()
    untranslated = []
    for service in ("sagemaker", "s3", "iam", "sts", "logs", "service-quotas", "ecr"):
        model = session.get_service_model(service)
        for name in model.shape_names:
            pattern = model.shape_for(name).metadata.get("pattern")
            if pattern is not None:
                try:
                    java_regex(pattern)
                except UnsupportedPattern as exc:
                    untranslated.append(f"{service}:{name}: {exc}")
    assert untranslated == []


# ----- each kind of constraint ----------------------------------------------------------------------
def test_a_correct_create_training_job_request_passes():
    assert validate_request("sagemaker", "CreateTrainingJob", good_training_job()) == []


@pytest.mark.parametrize("operation, params, path, constraint", [
    ("DescribeTrainingJob", {}, "TrainingJobName", "required member missing"),
    ("DescribeTrainingJob", {"TrainingJobName": "a", "Extra": 1}, "Extra", "unknown member"),
    ("DescribeTrainingJob", {"TrainingJobName": 7}, "TrainingJobName", "type: expected a string"),
    ("DescribeTrainingJob", {"TrainingJobName": None}, "TrainingJobName", "null is not a valid string"),
    ("DescribeTrainingJob", {"TrainingJobName": "x" * 64}, "TrainingJobName", "max length 63"),
    ("DescribeTrainingJob", {"TrainingJobName": ""}, "TrainingJobName", "min length 1"),
    ("DescribeTrainingJob", {"TrainingJobName": "ar_t1"}, "TrainingJobName", "pattern [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"),
    ("ListTrainingJobs", {"MaxResults": 0}, "MaxResults", "min value 1"),
    ("ListTrainingJobs", {"MaxResults": 101}, "MaxResults", "max value 100"),
    ("ListTrainingJobs", {"MaxResults": True}, "MaxResults", "type: expected an integer"),
    ("ListTrainingJobs", {"MaxResults": "10"}, "MaxResults", "type: expected an integer"),
    ("ListTrainingJobs", {"StatusEquals": "Running"}, "StatusEquals", "enum: not one of"),
    ("ListTrainingJobs", {"CreationTimeAfter": [1]}, "CreationTimeAfter", "type: expected a timestamp"),
    ("Search", {"Resource": "TrainingJob", "SearchExpression": {"Filters": []}}, "SearchExpression.Filters",
     "at least 1 entries"),
    ("Search", {"Resource": "TrainingJob", "SearchExpression": {"Filters": [
        {"Name": "Tags.run", "Operator": "Equals", "Value": ""}]}}, "SearchExpression.Filters[0].Value", "min length 1"),
    ("Search", {"Resource": "TrainingJob", "SearchExpression": {"Filters": [{"Operator": "Equals"}]}},
     "SearchExpression.Filters[0].Name", "required member missing"),
    ("AddTags", {"ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/a",
                 "Tags": [{"Key": "candidate", "Value": "c-1,c-2"}]}, "Tags[0].Value", f"pattern {TAG_PATTERN}"),
    ("AddTags", {"ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/a",
                 "Tags": [{"Key": "k", "Value": "v" * 257}]}, "Tags[0].Value", "max length 256"),
    ("AddTags", {"ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/a",
                 "Tags": [{"Key": f"k{i}", "Value": "v"} for i in range(51)]}, "Tags", "at most 50 entries"),
    ("AddTags", {"ResourceArn": "not-an-arn", "Tags": []}, "ResourceArn", "pattern"),
    ("StopTrainingJob", {"TrainingJobName": "ar-t1-e1-a1", "Force": True}, "Force", "unknown member"),
])
def test_each_constraint_kind_is_enforced_with_the_member_path(operation, params, path, constraint):
    found = constraints(validate_request("sagemaker", operation, params))
    assert any(p == path and c.startswith(constraint) for p, c in found), found


def test_map_keys_values_and_size_are_checked():
    env = {"GOOD_1": "x", "1BAD": "x", "BAD-DASH": "x", "LONG": "v" * 513}
    found = constraints(validate_request("sagemaker", "CreateTrainingJob", good_training_job(Environment=env)))
    assert ("Environment<key '1BAD'>", "pattern [a-zA-Z_][a-zA-Z0-9_]*") in found
    assert ("Environment<key 'BAD-DASH'>", "pattern [a-zA-Z_][a-zA-Z0-9_]*") in found
    assert ("Environment{LONG}", "max length 512 (is 513)") in found
    assert not any(p.startswith("Environment{GOOD_1}") or "GOOD_1" in p for p, _ in found)
    many = {f"V{i}": "x" for i in range(101)}
    assert ("Environment", "at most 100 entries (has 101)") in constraints(
        validate_request("sagemaker", "CreateTrainingJob", good_training_job(Environment=many)))


def test_nested_lists_structures_and_enums_report_full_paths():
    request = good_training_job()
    request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3DataType"] = "Prefix"
    request["ResourceConfig"]["InstanceType"] = "g5.xlarge"
    found = constraints(validate_request("sagemaker", "CreateTrainingJob", request))
    assert any(p == "InputDataConfig[0].DataSource.S3DataSource.S3DataType" and c.startswith("enum") for p, c in found)
    assert any(p == "ResourceConfig.InstanceType" and c.startswith("enum") for p, c in found)


def test_unions_need_exactly_one_member():
    found = constraints(validate_request("sagemaker", "CreateAutoMLJobV2", {"AutoMLProblemTypeConfig": {}}))
    assert any(p == "AutoMLProblemTypeConfig" and c.startswith("union") for p, c in found)


def test_other_services_shapes_are_checked_too():
    assert ("RoleName", r"pattern [\w+=,.@-]+") in constraints(validate_request("iam", "GetRole", {"RoleName": "rôle"}))
    assert ("logStreamNamePrefix", "pattern [^:*]*") in constraints(validate_request(
        "logs", "DescribeLogStreams", {"logGroupName": "/aws/sagemaker/TrainingJobs", "logStreamNamePrefix": "a:b"}))
    assert ("QuotaCode", "required member missing") in constraints(
        validate_request("service-quotas", "GetServiceQuota", {"ServiceCode": "sagemaker"}))
    assert any(p == "repositoryName" and c.startswith("pattern") for p, c in constraints(
        validate_request("ecr", "CreateRepository", {"repositoryName": "Autoresearch"})))
    assert validate_request("sts", "GetCallerIdentity", {}) == []
    assert any(c.startswith("exactly one of logGroupName and logGroupIdentifier") for _, c in constraints(
        validate_request("logs", "GetLogEvents", {"logStreamName": "s"})))


# ----- documented rules ---------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, path, constraint", [
    ({"StoppingCondition": {"MaxRuntimeInSeconds": 28 * 86400 + 1, "MaxWaitTimeInSeconds": 28 * 86400 + 1}},
     "StoppingCondition.MaxRuntimeInSeconds", "max value 2419200 (28 days)"),
    ({"StoppingCondition": {"MaxRuntimeInSeconds": 1800}}, "StoppingCondition.MaxWaitTimeInSeconds",
     "required with EnableManagedSpotTraining"),
    ({"StoppingCondition": {"MaxRuntimeInSeconds": 1800, "MaxWaitTimeInSeconds": 1799}},
     "StoppingCondition.MaxWaitTimeInSeconds", ">= MaxRuntimeInSeconds (1800)"),
    ({"EnableManagedSpotTraining": False}, "StoppingCondition.MaxWaitTimeInSeconds",
     "only valid with EnableManagedSpotTraining"),
    ({"HyperParameters": {"sagemaker_submit_directory": '"s3://b/' + "k" * 260 + '"'}},
     "HyperParameters{sagemaker_submit_directory}", "max length 256"),
    ({"Tags": [{"Key": "run", "Value": "a"}, {"Key": "run", "Value": "b"}]}, "Tags", "tag keys must be unique"),
    ({"ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 0, "VolumeSizeInGB": 50}},
     "ResourceConfig.InstanceCount", "min value 1"),
    ({"StoppingCondition": None}, "StoppingCondition", "null is not a valid structure"),
])
def test_documented_training_job_rules(overrides, path, constraint):
    found = constraints(validate_request("sagemaker", "CreateTrainingJob", good_training_job(**overrides)))
    assert any(p == path and c.startswith(constraint) for p, c in found), found


def test_duplicate_channels_and_a_missing_resource_config_are_refused():
    request = good_training_job()
    request["InputDataConfig"] = request["InputDataConfig"] * 2
    del request["ResourceConfig"]
    found = constraints(validate_request("sagemaker", "CreateTrainingJob", request))
    assert ("InputDataConfig", "channel names must be unique ('data' repeats)") in found
    assert ("ResourceConfig", "required for a non-serverless training job") in found


@pytest.mark.parametrize("bucket, ok", [
    ("ar-test-bucket", True), ("my.bucket.1", True), ("ab", False), ("My_Bucket", False), ("192.168.5.4", False),
    ("xn--bucket", False), ("bucket-s3alias", False), ("a..b", False), ("-bucket", False), ("b" * 64, False),
])
def test_bucket_naming_rules(bucket, ok):
    found = validate_request("s3", "CreateBucket", {"Bucket": bucket})
    assert (found == []) is ok, found


def test_s3_key_and_metadata_limits_and_iam_json_documents():
    assert ("Key", "max 1024 bytes of UTF-8") in constraints(
        validate_request("s3", "PutObject", {"Bucket": "b", "Key": "é" * 513}))
    assert any(c.startswith("user-defined metadata max 2 KB") for _, c in constraints(
        validate_request("s3", "PutObject", {"Bucket": "b", "Key": "k", "Metadata": {"sha256": "x" * 2100}})))
    assert any(c.startswith("MalformedPolicyDocument") for _, c in constraints(validate_request(
        "iam", "PutRolePolicy", {"RoleName": "r", "PolicyName": "p", "PolicyDocument": "{not json"})))


# ----- the hook ----------------------------------------------------------------------------------------------
def test_hook_refuses_like_aws_and_the_server_never_sees_the_request(aws, strict_aws):
    sm = boto3.client("sagemaker", region_name=REGION)
    with pytest.raises(ClientError) as err:
        sm.describe_training_job(TrainingJobName="ar_t1_e1")
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "TrainingJobName" in str(err.value) and "pattern" in str(err.value)
    assert aws.calls_of("sagemaker.DescribeTrainingJob") == []          # refused before sending
    (violation,) = strict_aws.take()
    assert (violation.operation, violation.path) == ("DescribeTrainingJob", "TrainingJobName")
    # a valid request goes through to moto as before, and is counted as checked
    with pytest.raises(ClientError) as missing:
        sm.describe_training_job(TrainingJobName="ar-t1-e1-a1")
    assert "failed to satisfy constraint" not in str(missing.value)   # moto's own "not found"
    assert len(aws.calls_of("sagemaker.DescribeTrainingJob")) == 1
    assert strict_aws.checked["sagemaker.DescribeTrainingJob"] == 2


def test_hook_covers_sessions_resources_and_transfers(aws, strict_aws, tmp_path):
    session = boto3.Session(region_name=REGION)
    s3 = session.client("s3")
    s3.create_bucket(Bucket="ar-strict")
    (tmp_path / "f.bin").write_bytes(b"x" * 10)
    s3.upload_file(str(tmp_path / "f.bin"), "ar-strict", "k/f.bin", ExtraArgs={"Metadata": {"sha256": "ab"}})
    boto3.resource("s3", region_name=REGION).Bucket("ar-strict").Object("k/f.bin").get()["Body"].read()
    iam = session.client("iam")
    with pytest.raises(ClientError) as err:
        iam.get_role(RoleName="rôle")
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert strict_aws.checked["s3.PutObject"] == 1 and strict_aws.checked["s3.GetObject"] == 1
    assert strict_aws.checked["s3.CreateBucket"] == 1
    assert [v.path for v in strict_aws.take()] == ["RoleName"]


def test_a_swallowed_violation_still_fails_the_test(tmp_path):
    """The code under test may catch the ValidationException (the runner ignores some on
    StopTrainingJob); the layer fails the test at teardown all the same, naming the operation,
    member and constraint. Run as a separate pytest so its failure is the thing observed."""
    (tmp_path / "conftest.py").write_text("from tests.strict_aws import strict_aws  # noqa: F401\n")
    (tmp_path / "test_inner.py").write_text(textwrap.dedent("""
        import boto3
        from botocore.exceptions import ClientError

        def test_swallows(strict_aws):
            sm = boto3.client("sagemaker", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                              aws_access_key_id="x", aws_secret_access_key="x")
            try:
                sm.stop_training_job(TrainingJobName="bad_name")
            except ClientError:
                pass   # "already finished", the runner would say
    """))
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "STRICT_AWS_MODE": "raise"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_inner.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 passed, 1 error" in proc.stdout, proc.stdout
    assert "sagemaker.StopTrainingJob: TrainingJobName: pattern [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62} (got 'bad_name')" \
        in proc.stdout, proc.stdout


def test_record_mode_records_without_refusing(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    strict = StrictAWS(raise_errors=False).install(monkeypatch)
    sm = boto3.client("sagemaker", region_name=REGION, endpoint_url="http://127.0.0.1:9")
    with pytest.raises(Exception) as err:     # the request is sent (and finds nobody listening)
        sm.describe_training_job(TrainingJobName="bad_name")
    assert not isinstance(err.value, ClientError)
    assert [v.path for v in strict.take()] == ["TrainingJobName"]


def test_dry_run_json_is_validated_like_a_call(tmp_path):
    """A request written to disk (the dry run's create_training_job.json) checks the same way."""
    path = tmp_path / "create_training_job.json"
    path.write_text(json.dumps(good_training_job(Tags=[{"Key": "candidate", "Value": "c-1,c-2"}])))
    found = validate_request("sagemaker", "CreateTrainingJob", json.loads(path.read_text()))
    assert [(v.path, v.constraint) for v in found] == [("Tags[0].Value", f"pattern {TAG_PATTERN}")]


# ----- today's requests ------------------------------------------------------------------------------------
def _dry_run_requests(tmp_path: Path, candidates_per_job: int, population: int = 4) -> list[dict]:
    from agent.config import Settings
    from sandbox.runners.base import ExecutionSpec
    from sandbox.runners.sagemaker import write_dry_run_requests
    from sandbox.workspace import build_workspace

    settings = Settings.model_validate({
        "aws": {"region": REGION, "role_arn": ROLE}, "s3": {"bucket": "ar-test-bucket"},
        "sagemaker": {"image_uri": good_training_job()["AlgorithmSpecification"]["TrainingImage"],
                      "candidates_per_job": candidates_per_job}})
    source = (PROJECT / "train.py").read_text()
    specs = []
    for i in range(population):
        execution_id = f"e{i + 1:05d}"
        ws = build_workspace(tmp_path / execution_id, source, PROJECT, {"execution_id": execution_id})
        specs.append(ExecutionSpec(execution_id, ws, "gpu", label=execution_id, tags={
            "run": "exp_1", "generation": "1", "candidate": f"g001-c{i + 1:02d}", "kind": "candidate"}))
    requests = {}
    for path in write_dry_run_requests(specs, settings, run_tag="exp_1"):
        request = json.loads(path.read_text())
        requests[request["TrainingJobName"]] = request
    return list(requests.values())


def test_dry_run_requests_one_candidate_per_job_satisfy_the_model(tmp_path):
    requests = _dry_run_requests(tmp_path, candidates_per_job=1)
    assert len(requests) == 4
    assert [str(v) for r in requests for v in validate_request("sagemaker", "CreateTrainingJob", r)] == []


def test_dry_run_requests_packed_four_per_job_satisfy_the_model(tmp_path):
    (request,) = _dry_run_requests(tmp_path, candidates_per_job=4)
    assert [str(v) for v in validate_request("sagemaker", "CreateTrainingJob", request)] == []


def test_packed_eight_with_odd_ids_and_a_long_tag_satisfy_the_model(tmp_path):
    """Eight candidates per job, ids with characters TagValue refuses, a 120-character run tag:
    the request still validates, and no id is cut in half in the tags."""
    from agent.config import Settings
    from sandbox.runners import sagemaker_request as req
    from sandbox.runners.base import ExecutionSpec
    from sandbox.workspace import build_workspace

    settings = Settings.model_validate({
        "aws": {"region": REGION, "role_arn": ROLE}, "s3": {"bucket": "b" * 63},
        "sagemaker": {"image_uri": good_training_job()["AlgorithmSpecification"]["TrainingImage"],
                      "candidates_per_job": 8, "instance_type": "ml.g5.48xlarge"}})
    source = (PROJECT / "train.py").read_text()
    tag = "exp_" + "x" * 116
    specs = []
    for i in range(8):
        eid = f"g001-c{i:02d}-candidate-1,{i}"      # a comma, as ids from elsewhere might carry
        ws = build_workspace(tmp_path / f"w{i}", source, PROJECT, {"execution_id": eid})
        specs.append(ExecutionSpec(eid, ws, "gpu", label=eid, tags={"run": tag, "generation": "1",
                                                                    "candidate": f"g001-c{i:02d}"}))
    request = req.build_create_request(specs, settings, run_tag=tag, run_id="0a1b2c3d", region=REGION)
    assert [str(v) for v in validate_request("sagemaker", "CreateTrainingJob", request)] == []
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags["candidate"].split(" ") == [f"g001-c{i:02d}" for i in range(8)]
    assert all(v in [f"g001-c{i:02d}-candidate-1_{i}" for i in range(8)] for v in tags["execution"].split(" "))
    assert len(request["HyperParameters"]["sagemaker_submit_directory"]) <= 256


def test_a_source_uri_over_the_hyperparameter_limit_is_refused_naming_the_keys(tmp_path):
    from agent.config import Settings
    from sandbox.runners import sagemaker_request as req
    from sandbox.runners.aws_clients import AWSConfigError
    from sandbox.runners.base import ExecutionSpec
    from sandbox.workspace import build_workspace

    settings = Settings.model_validate({
        "aws": {"region": REGION, "role_arn": ROLE}, "s3": {"bucket": "ar-test", "prefix": "p/" * 130},
        "sagemaker": {"image_uri": good_training_job()["AlgorithmSpecification"]["TrainingImage"]}})
    ws = build_workspace(tmp_path / "w", (PROJECT / "train.py").read_text(), PROJECT, {"execution_id": "e1"})
    with pytest.raises(AWSConfigError, match=r"sagemaker_submit_directory .* allows 256: shorten s3.bucket, s3.prefix"):
        req.build_create_request([ExecutionSpec("e1", ws, "gpu")], settings, run_tag="t", run_id="0a1b2c3d",
                                 region=REGION)


def test_instance_type_is_checked_against_the_model_enum_at_config_load():
    from pydantic import ValidationError

    from sandbox.runners.settings import SageMakerSettings

    with pytest.raises(ValidationError, match=r"'g5.xlarge' is not a SageMaker training instance type.*ml.g5.xlarge"):
        SageMakerSettings(instance_type="g5.xlarge")
    assert SageMakerSettings(instance_type="ml.g6e.xlarge").instance_type == "ml.g6e.xlarge"


def test_stopping_condition_stays_within_28_days():
    from sandbox.runners.sagemaker_request import stopping_condition
    from sandbox.runners.settings import AWSBackendSettings

    settings = AWSBackendSettings.model_validate({"sagemaker": {"max_run": 27 * 24 * 3600, "max_wait": 28 * 24 * 3600,
                                                                "instance_type": "ml.g5.xlarge"}})
    cond = stopping_condition(settings, 3)
    assert cond["MaxRuntimeInSeconds"] == cond["MaxWaitTimeInSeconds"] == 28 * 24 * 3600
