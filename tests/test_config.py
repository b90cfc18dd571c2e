"""config.yaml -> Settings: the shipped file loads, documents every key, and bad input names the
file, the key and what was expected; the serverless pipeline's keys are accepted."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.config import ConfigError, Section, Settings, load_settings

REPO = Path(__file__).resolve().parents[1]


def test_shipped_config_loads_and_matches_the_code_defaults():
    shipped = load_settings(REPO / "config.yaml")
    assert shipped.model_dump() == Settings().model_dump()   # "a missing key takes the default shown"


def _fields(model: type[Section], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            out += _fields(annotation, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def test_every_setting_is_documented_in_config_yaml():
    text = (REPO / "config.yaml").read_text()
    data = yaml.safe_load(text)
    missing = []
    for dotted in _fields(Settings):
        section, _, key = dotted.rpartition(".")
        node = data.get(section, {}) if section else data
        # a key may be shown commented out (tables such as llm.prices have long built-in defaults)
        if key not in (node or {}) and f"# {key}:" not in text and f"#   {key}:" not in text:
            missing.append(dotted)
    assert not missing, f"settings missing from config.yaml: {missing}"


@pytest.mark.parametrize("body, expected", [
    ("run:\n  population: many\n", "run.population: Input should be a valid integer"),
    ("run:\n  popluation: 3\n", "run.popluation: unknown key"),
    ("selection:\n  k_sigma: -1\n", "selection.k_sigma: Input should be greater than or equal to 0"),
    ("run:\n  backend: gcp\n", "run.backend: Input should be 'local', 'sagemaker' or 'simulated'"),
    ("strategy_mix:\n  bold: 2\n", "unknown strategies ['bold']"),
    ("sagemaker:\n  max_run: 3600\n  max_wait: 1800\n", "max_wait (1800) must be >= max_run (3600)"),
    ("run: [1, 2\n", "not valid YAML at line"),
    ("- a list\n", "expected a mapping of sections"),
])
def test_bad_config_names_the_file_the_key_and_what_was_expected(tmp_path, body, expected):
    path = tmp_path / "config.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_missing_explicit_config_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_serverless_pipeline_keys_are_accepted_and_mapped(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "aws:\n  profile: research\n  region: us-west-2\n  role_arn: arn:aws:iam::123456789012:role/sm\n"
        "s3:\n  bucket: my-bucket\n  data_prefix: data\n  output_prefix: out\n"
        "sagemaker:\n  instance_type: ml.g5.2xlarge\n  use_spot: true\n  max_run: 900\n  max_wait: 1800\n"
        "pipeline:\n  max_generations: 7\n  population_size: 6\n  budget_usd: 12.5\n  mutation_rate: 0.3\n")
    s = load_settings(path)
    assert (s.aws.profile, s.aws.region, s.s3.bucket, s.sagemaker.instance_type) == \
        ("research", "us-west-2", "my-bucket", "ml.g5.2xlarge")
    assert (s.run.generations, s.run.population, s.run.budget_usd) == (7, 6, 12.5)


def test_cli_reports_a_broken_config_with_exit_2(tmp_path):
    (tmp_path / "config.yaml").write_text("run:\n  population: many\n")
    (tmp_path / "train.py").write_text("")
    out = subprocess.run([sys.executable, "-m", "agent.cli", "autopilot", "--run", "t", "--dry-run"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "config.yaml" in out.stderr + out.stdout and "run.population" in out.stderr + out.stdout


def test_retired_llm_keys_are_refused_naming_what_replaces_them(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("llm:\n  unreachable_after_s: 300\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    text = str(err.value)
    assert str(cfg) in text and "llm.unreachable_after_s was removed" in text
    assert "llm.max_retries" in text and "llm.timeout_s" in text


@pytest.mark.parametrize("yaml_text,key", [
    ("llm:\n  tool_choice: any\n", "llm.tool_choice"),
    ("llm:\n  temperature: 0.5\n", "llm.temperature"),
    ("llm:\n  model: claude-sonnet-4-5\n  effort: {moderate: high}\n", "llm.effort"),
    ("llm:\n  effort: {moderate: extreme}\n", "llm.effort"),
])
def test_config_refuses_what_the_model_would_refuse_naming_the_key(tmp_path, yaml_text, key):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError, match=key.split(".")[1]):
        load_settings(cfg)


def test_a_model_that_takes_forced_tools_and_temperature_loads(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("llm:\n  model: claude-sonnet-4-5\n  tool_choice: tool\n  temperature: 0.5\n")
    assert load_settings(cfg).llm.tool_choice == "tool"
