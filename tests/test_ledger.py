"""agent/ledger.py: GPU and LLM dollars, budget admission, a run's pricing."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from agent.config import Settings
from agent.ledger import (
    EVAL_OVERHEAD, Budget, LedgerError, Pricing, estimate_execution_cost, execution_cost, instance_price, llm_cost,
    merged_prices, price_note, spot_savings, worked_example,
)

REPO = Path(__file__).resolve().parents[1]

LLM_PRICES = Settings().llm.prices


def test_billable_seconds_times_on_demand_price():
    # one hour of billable time on ml.g5.xlarge in us-east-1 is the hourly price itself
    assert execution_cost("sagemaker", "ml.g5.xlarge", "us-east-1", 3600) == pytest.approx(1.408)
    # spot: billable is already discounted, so 168 s billable costs 168 s, whatever the wall time
    assert execution_cost("sagemaker", "ml.g5.xlarge", "us-east-1", 168) == pytest.approx(168 / 3600 * 1.408)
    assert execution_cost("local", None, None, 3600) == 0.0
    assert execution_cost("sagemaker", "ml.g5.xlarge", "us-east-1", None) == 0.0


def test_spot_savings_is_one_minus_billable_over_training():
    assert spot_savings(120, 400) == pytest.approx(0.7)
    assert spot_savings(None, 400) is None


def test_regions_fall_back_to_default_and_config_overrides_win():
    assert instance_price("ml.g5.xlarge", "eu-west-1") == instance_price("ml.g5.xlarge", "default")
    assert "default table" in price_note("ml.g5.xlarge", "eu-west-1")
    prices = merged_prices({"eu-west-1": {"ml.g5.xlarge": 1.6}, "default": {"ml.custom.big": 9.0}})
    assert instance_price("ml.g5.xlarge", "eu-west-1", prices) == 1.6
    assert instance_price("ml.custom.big", "ap-south-1", prices) == 9.0
    assert instance_price("ml.g5.xlarge", "us-east-1", prices) == 1.408
    with pytest.raises(LedgerError, match=r"instance_prices\.us-east-1\.ml\.unknown\.xlarge"):
        instance_price("ml.unknown.xlarge", "us-east-1")
    for family in ("ml.g5.", "ml.g6.", "ml.g6e.", "ml.p4d.", "ml.p5."):
        assert any(k.startswith(family) for k in merged_prices()["default"])


def test_estimates_for_admission():
    od = estimate_execution_cost("sagemaker", "ml.g5.xlarge", "us-east-1", 300, False, startup_s=180)
    spot = estimate_execution_cost("sagemaker", "ml.g5.xlarge", "us-east-1", 300, True, startup_s=180,
                                   spot_billable_fraction=0.35)
    assert od == pytest.approx(480 / 3600 * 1.408) and spot == pytest.approx(0.35 * od)
    assert estimate_execution_cost("local", None, None, 300, True) == 0.0
    with pytest.raises(LedgerError):
        estimate_execution_cost("sagemaker", "ml.g5.xlarge", "us-east-1", 300, True, spot_billable_fraction=0)


def test_pricing_reads_the_budget_from_prepare_py_and_shares_start_up_in_packed_jobs(monkeypatch):
    monkeypatch.delenv("AUTORESEARCH_TIME_BUDGET", raising=False)
    settings = Settings.model_validate({"aws": {"region": "us-east-1"},
                                        "sagemaker": {"use_spot": False, "startup_estimate_s": 180}})
    pricing = Pricing(settings.aws_backend, settings.instance_prices, REPO / "prepare.py")
    assert pricing.expected_seconds("gpu") == pytest.approx(300 * EVAL_OVERHEAD)   # prepare.py's PRESETS
    single = pricing.estimate("sagemaker", "gpu")
    assert single == pytest.approx((180 + 300 * EVAL_OVERHEAD) / 3600 * 1.408)
    settings.sagemaker.candidates_per_job = 4
    assert pricing.estimate("sagemaker", "gpu") == pytest.approx((45 + 300 * EVAL_OVERHEAD) / 3600 * 1.408)
    assert pricing.estimate("local", "gpu") == 0.0
    monkeypatch.setenv("AUTORESEARCH_TIME_BUDGET", "10")
    assert pricing.expected_seconds("gpu") == pytest.approx(10 * EVAL_OVERHEAD)


def test_llm_cost_uses_all_four_prices():
    usage = {"input_tokens": 1_000_000, "output_tokens": 100_000, "cache_creation_input_tokens": 200_000,
             "cache_read_input_tokens": 2_000_000}
    assert llm_cost("claude-sonnet-4-5", usage, LLM_PRICES) == pytest.approx(3.0 + 1.5 + 0.75 + 0.6)
    assert llm_cost("claude-sonnet-4-5", {"input": 1000, "output": 10}, LLM_PRICES) == pytest.approx(0.003 + 0.00015)
    with pytest.raises(LedgerError, match="llm.prices.gpt-9"):
        llm_cost("gpt-9", usage, LLM_PRICES)


def test_budget_admission():
    budget = Budget(10.0)
    assert budget.can_admit(2.0, spent_usd=5.0, committed_usd=3.0)
    assert not budget.can_admit(2.01, spent_usd=5.0, committed_usd=3.0)
    assert Budget(None).can_admit(1e9, spent_usd=1e9)
    assert math.isinf(Budget(None).remaining(5))
    with pytest.raises(LedgerError):
        Budget(0)
    with pytest.raises(LedgerError):
        budget.can_admit(-1, 0)


def test_worked_example_matches_the_formula():
    text = worked_example()
    assert "$0.0657 per candidate, $0.66 in all" in text and "$1.88 in all" in text
    assert "aws.amazon.com/sagemaker" in text
