"""`aws setup`, `prepare --upload` and `doctor` against moto's server on 127.0.0.1."""
from __future__ import annotations

import json

import boto3
import pytest

pytest.register_assert_rewrite("tests.aws_fixtures")   # imported below before pytest loads it as a plugin

from agent.aws_setup import aws_setup, doctor, doctor_report, role_policy, upload_prepared  # noqa: E402
from agent.config import Settings  # noqa: E402
from sandbox.runners.aws_clients import AWSConfigError  # noqa: E402
from tests.aws_fixtures import REGION, QuotaStandIn, hide_sagemaker_package  # noqa: E402

pytest_plugins = ("tests.aws_fixtures",)   # fixtures: aws_server, aws, sim

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.8.0-gpu-py312"


def settings(**aws_keys) -> Settings:
    return Settings.model_validate({"aws": {"region": REGION, **aws_keys}, "s3": {"bucket": "ar-setup"},
                                    "run": {"preset": "micro"}, "sagemaker": {"image_uri": IMAGE}})


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    (root / "micro" / "data").mkdir(parents=True)
    (root / "micro" / "tokenizer").mkdir(parents=True)
    (root / "micro" / "data" / "shard_00000.parquet").write_bytes(b"x" * 1000)
    (root / "micro" / "data" / "shard_06542.parquet").write_bytes(b"v" * 500)
    (root / "micro" / "tokenizer" / "tokenizer.pkl").write_bytes(b"tok")
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(root))
    return root


def by_name(checks):
    return {c.name: c for c in checks}


def test_setup_is_idempotent_and_uploads_only_changes(aws, cache):
    s = settings()
    lines = aws_setup(s, preset="micro")
    assert any(line.startswith("created role arn:aws:iam::") for line in lines)
    assert "created bucket s3://ar-setup in us-east-1" in lines
    assert any("uploaded 3 files" in line and "0 unchanged" in line for line in lines)
    keys = sorted(o["Key"] for o in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket="ar-setup")["Contents"])
    assert keys == ["autoresearch/data/micro/data/shard_00000.parquet", "autoresearch/data/micro/data/shard_06542.parquet",
                    "autoresearch/data/micro/tokenizer/tokenizer.pkl"]
    iam = boto3.client("iam", region_name=REGION)
    role = iam.get_role(RoleName="autoresearch-sagemaker")["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    puts_before = len([c for c in aws.calls if c.operation.startswith("PUT /ar-setup/")])

    (cache / "micro" / "tokenizer" / "tokenizer.pkl").write_bytes(b"tok2")
    again = aws_setup(s, preset="micro")
    assert any(line.startswith("reused role") for line in again) and "reused bucket s3://ar-setup" in again
    assert any("uploaded 1 files" in line and "2 unchanged skipped" in line for line in again)
    puts_after = len([c for c in aws.calls if c.operation.startswith("PUT /ar-setup/")])
    assert puts_after - puts_before == 1
    assert len(aws.calls_of("iam.CreateRole")) == 1


def test_policy_is_least_privilege():
    policy = role_policy(settings(), "123456789012", REGION)
    resources = json.dumps(policy)
    assert "arn:aws:s3:::ar-setup/autoresearch/data/*" in resources
    assert "arn:aws:s3:::ar-setup/autoresearch/runs/*" in resources
    assert "/aws/sagemaker/TrainingJobs" in resources
    assert '"s3:*"' not in resources and '"Action": "*"' not in resources
    writes = [st for st in policy["Statement"] if "s3:PutObject" in st["Action"]]
    assert all("/data/" not in st["Resource"] for st in writes)   # jobs cannot overwrite the data


def test_upload_without_prepared_data_names_the_command(aws, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "empty"))
    with pytest.raises(AWSConfigError, match=r"run `autoresearch prepare --preset micro` first"):
        upload_prepared(settings(), "micro")


def test_doctor_on_a_fresh_account_names_each_fix(aws):
    checks = by_name(doctor(settings()))
    assert checks["credentials"].ok and "123456789012" in checks["credentials"].detail
    assert checks["region"].ok and checks["region"].detail == REGION
    assert checks["role"].ok is False and checks["role"].fix == "run `autoresearch aws setup`"
    assert checks["bucket"].ok is False and "autoresearch aws setup" in checks["bucket"].fix
    assert checks["data"].ok is False
    assert checks["spot quota"].ok is True and "= 100" in checks["spot quota"].detail
    assert checks["image"].ok and checks["image"].detail == IMAGE
    text, ok = doctor_report(list(checks.values()))
    assert not ok and "FAIL  role" in text and "fix: run `autoresearch aws setup`" in text


def test_doctor_after_setup_passes_and_reads_the_spot_quota(aws, cache):
    s = settings()
    aws_setup(s, preset="micro")

    QuotaStandIn(aws, defaults={"ml.g5.xlarge for training job usage": ("L-AAAA", 2.0),
                                "ml.g5.xlarge for spot training job usage": ("L-SPOT", 0.0)},
                 applied={"L-AAAA": 8.0, "L-SPOT": 4.0})
    checks = by_name(doctor(s))
    # isolation is a warning (SKIP) without the pre-built image: it says what a candidate could reach
    assert all(c.ok for n, c in checks.items() if n != "isolation"), doctor_report(list(checks.values()))[0]
    assert checks["isolation"].ok is None and "credential endpoint" in checks["isolation"].detail
    assert checks["spot quota"].detail == "ml.g5.xlarge for spot training job usage = 4"
    assert checks["data"].detail.startswith("preset micro: 2 data files, 1 tokenizer files")


def test_doctor_without_service_quotas_permission_says_it_could_not_check(aws):
    aws.scripts.pop("service-quotas.ListServiceQuotas")      # the default account's stand-in
    aws.fail("service-quotas.ListServiceQuotas", "AccessDeniedException", "not authorized", times=10)
    quota = by_name(doctor(settings()))["spot quota"]
    assert quota.ok is None and "could not check" in quota.detail and "AccessDeniedException" in quota.detail


def test_doctor_reads_the_aws_default_when_the_quota_was_never_raised(aws):
    """ListServiceQuotas lists applied values only: a new account's GPU spot quota is absent there
    and 0 by default; doctor says FAIL with the quota's code, not SKIP."""
    QuotaStandIn(aws, defaults={"ml.g5.xlarge for spot training job usage": ("L-SPOT", 0.0)})
    quota = by_name(doctor(settings()))["spot quota"]
    assert quota.ok is False and "default value" in quota.detail and "(L-SPOT) in us-east-1" in quota.detail
    assert "--quota-code L-SPOT" in quota.fix and "request-service-quota-increase" in quota.fix


def test_doctor_without_credentials_says_how_to_get_them(aws, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    checks = doctor(settings())
    assert [c.name for c in checks] == ["region", "credentials"]
    assert checks[1].ok is False and "aws configure" in checks[1].fix
    with pytest.raises(AWSConfigError, match="aws configure"):
        aws_setup(settings(), preset=None)


def test_doctor_image_check_names_the_fix_without_the_sagemaker_package(aws, monkeypatch):
    hide_sagemaker_package(monkeypatch)
    s = settings()
    s.sagemaker.image_uri = None
    image = by_name(doctor(s))["image"]
    assert image.ok is False and "autoresearch-at-scale[aws]" in image.fix


def test_setup_against_an_unreachable_endpoint_is_one_clear_error(tmp_path, monkeypatch):
    """No traceback: the error names the endpoint problem and where to fix it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")      # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(AWSConfigError, match=r"AWS unreachable.*AWS_ENDPOINT_URL"):
        aws_setup(settings(), upload=False)
