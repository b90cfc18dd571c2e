"""Dollars: GPU time and LLM tokens per execution; budget admission; a run's pricing.

Cost facts (see DESIGN.md):
  * SageMaker bills `BillableTimeInSeconds` x the instance's ON-DEMAND hourly price. For Managed
    Spot jobs the billable time is already the discounted time, so the same formula holds and the
    spot saving of a job is `1 - BillableTimeInSeconds / TrainingTimeInSeconds`.
  * Local runs cost 0 here (the machine is already paid for).
  * LLM calls cost tokens x the model's per-million prices (`llm.prices` in config.yaml), with
    Anthropic's separate prices for cache writes and cache reads.

The functions take plain dicts (what memory stores), so any caller can feed them.

Prices. DEFAULT_INSTANCE_PRICES are SageMaker AI *training* on-demand list prices in USD per
instance-hour for us-east-1 (US East, N. Virginia), from the AWS pricing page
https://aws.amazon.com/sagemaker/ai/pricing/ (On-Demand Pricing -> Training), as published and as
repeated by several public cost tools we cross-checked (e.g. ml.g5.xlarge $1.408/h). us-west-2 lists
the same prices for these families. Other regions are dearer and are NOT guessed: they fall back to
"default" (= us-east-1) unless config.yaml's `instance_prices.<region>.<instance>` says otherwise,
and `price_note()` says when a fallback was used. AWS changes prices (P4/P5 were cut in 2025):
check the page and override in config.yaml before trusting a budget.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from sandbox.presets import time_budget

if TYPE_CHECKING:
    from sandbox.runners.settings import AWSBackendSettings

PRICE_SOURCE = ("AWS SageMaker AI pricing page, On-Demand -> Training, us-east-1 "
                "(https://aws.amazon.com/sagemaker/ai/pricing/); override with instance_prices in config.yaml")

_US_TRAINING_ON_DEMAND = {
    # A10G (24 GB)
    "ml.g5.xlarge": 1.408, "ml.g5.2xlarge": 1.515, "ml.g5.4xlarge": 2.03, "ml.g5.8xlarge": 3.06,
    "ml.g5.12xlarge": 7.09, "ml.g5.16xlarge": 4.10, "ml.g5.24xlarge": 10.18, "ml.g5.48xlarge": 20.36,
    # L4 (24 GB); only the size we could cross-check is listed, add others in config.yaml
    "ml.g6.xlarge": 0.9765,
    # L40S (48 GB)
    "ml.g6e.xlarge": 2.61, "ml.g6e.2xlarge": 2.80, "ml.g6e.4xlarge": 3.76, "ml.g6e.8xlarge": 5.6607,
    "ml.g6e.12xlarge": 13.12,
    # A100 x8 / H100 x8 (prices after AWS's 2025 reductions; verify on the pricing page)
    "ml.p4d.24xlarge": 25.251, "ml.p5.48xlarge": 63.296,
}
DEFAULT_INSTANCE_PRICES: dict[str, dict[str, float]] = {
    "default": dict(_US_TRAINING_ON_DEMAND),
    "us-east-1": dict(_US_TRAINING_ON_DEMAND),
    "us-west-2": dict(_US_TRAINING_ON_DEMAND),
}
# Backends that bill nothing here: local slots (the machine is already paid for) and the
# simulated backend (nothing runs at all).
FREE_BACKENDS = frozenset({"local", "simulated"})


class LedgerError(ValueError):
    """A cost that cannot be computed; the message names the config key that fixes it."""


def merged_prices(overrides: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, dict[str, float]]:
    """Defaults with config.yaml's `instance_prices` laid over them (per region, per instance)."""
    table = {region: dict(prices) for region, prices in DEFAULT_INSTANCE_PRICES.items()}
    for region, prices in (overrides or {}).items():
        table.setdefault(region, {}).update({k: float(v) for k, v in prices.items()})
    return table


def instance_price(instance_type: str, region: str | None,
                   prices: Mapping[str, Mapping[str, float]] | None = None) -> float:
    """On-demand USD per hour: the region's entry, else the "default" table."""
    table = prices if prices is not None else DEFAULT_INSTANCE_PRICES
    for key in (region or "default", "default"):
        if instance_type in table.get(key, {}):
            return float(table[key][instance_type])
    raise LedgerError(f"no price for {instance_type} in {region or 'default'}: add "
                      f"instance_prices.{region or 'default'}.{instance_type}: <USD per hour> to config.yaml")


def price_note(instance_type: str, region: str | None,
               prices: Mapping[str, Mapping[str, float]] | None = None) -> str:
    table = prices if prices is not None else DEFAULT_INSTANCE_PRICES
    if region and instance_type in table.get(region, {}):
        return f"{instance_type} in {region}: ${table[region][instance_type]}/h"
    return (f"{instance_type}: ${instance_price(instance_type, region, table)}/h (default table: "
            f"no {region or 'region'} price configured)")


def execution_cost(backend: str, instance_type: str | None, region: str | None, billable_seconds: float | None,
                   prices: Mapping[str, Mapping[str, float]] | None = None) -> float:
    """USD for one execution: billable seconds x on-demand price; local runs and unknown billable = 0."""
    if backend in FREE_BACKENDS or not billable_seconds:
        return 0.0
    if not instance_type:
        raise LedgerError(f"a {backend} execution with billable time needs its instance_type")
    return float(billable_seconds) / 3600.0 * instance_price(instance_type, region, prices)


def spot_savings(billable_seconds: float | None, training_seconds: float | None) -> float | None:
    """Fraction saved by Managed Spot: 1 - billable / training time (None when unknown)."""
    if not billable_seconds or not training_seconds:
        return None
    return max(0.0, 1.0 - float(billable_seconds) / float(training_seconds))


def estimate_execution_cost(backend: str, instance_type: str | None, region: str | None, expected_seconds: float,
                            use_spot: bool, *, startup_s: float = 0.0, spot_billable_fraction: float = 0.35,
                            prices: Mapping[str, Mapping[str, float]] | None = None) -> float:
    """USD expected for one execution before it runs (for budget admission).

    Billable time = (start-up + expected run time), times `spot_billable_fraction` for spot jobs
    (billable/training time; 0.35 = a 65% spot saving, a middle value of the 60-90% AWS quotes;
    set sagemaker.spot_billable_fraction from your own jobs' `spot_savings`). Start-up is counted
    whole: image pull, data download and pip install are billed. Local = 0.
    """
    if backend in FREE_BACKENDS:
        return 0.0
    seconds = max(0.0, startup_s) + max(0.0, expected_seconds)
    if use_spot:
        if not 0 < spot_billable_fraction <= 1:
            raise LedgerError(f"spot_billable_fraction must be in (0, 1], got {spot_billable_fraction}")
        seconds *= spot_billable_fraction
    return execution_cost(backend, instance_type, region, seconds, prices)


# ----- LLM ---------------------------------------------------------------------------------------
_USAGE_KEYS = {
    "input": ("input_tokens", "input"),
    "output": ("output_tokens", "output"),
    "cache_write": ("cache_creation_input_tokens", "cache_write_tokens", "cache_write"),
    "cache_read": ("cache_read_input_tokens", "cache_read_tokens", "cache_read"),
}


def llm_cost(model: str, usage: Mapping[str, Any], prices: Mapping[str, Mapping[str, float]]) -> float:
    """USD for one call: tokens x the model's USD-per-million prices (input, output, cache_write,
    cache_read). `usage` may use the Anthropic API's field names or the short ones."""
    if model not in prices:
        raise LedgerError(f"no LLM price for model {model!r}: add llm.prices.{model}: "
                          "{input: .., output: .., cache_write: .., cache_read: ..} (USD per million tokens)")
    price = prices[model]
    total = 0.0
    for kind, names in _USAGE_KEYS.items():
        tokens = next((usage[n] for n in names if usage.get(n) is not None), 0)
        if tokens:
            if kind not in price:
                raise LedgerError(f"llm.prices.{model} lacks {kind!r} but the call used {tokens} {kind} tokens")
            total += float(tokens) * float(price[kind]) / 1e6
    return total


# ----- budget admission and per-run pricing --------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """`--budget-usd` admission, the one check the scheduler makes before it launches anything:
    start new work only if what is spent, what running work is expected to cost (committed) and
    the new work's estimate all fit. None = unlimited."""

    limit_usd: float | None

    def __post_init__(self) -> None:
        if self.limit_usd is not None and self.limit_usd <= 0:
            raise LedgerError(f"budget must be > 0 USD, got {self.limit_usd}")

    def remaining(self, spent_usd: float, committed_usd: float = 0.0) -> float:
        if self.limit_usd is None:
            return math.inf
        return self.limit_usd - spent_usd - committed_usd

    def can_admit(self, estimated_usd: float, spent_usd: float, committed_usd: float = 0.0) -> bool:
        if estimated_usd < 0 or spent_usd < 0 or committed_usd < 0:
            raise LedgerError("costs must be >= 0")
        return estimated_usd <= self.remaining(spent_usd, committed_usd) + 1e-12


EVAL_OVERHEAD = 1.15       # evaluation and process start on top of the training budget


class Pricing:
    """Dollars per execution of one run: estimates for admission, rates for the live view, actual
    costs from billable seconds. Local and simulated executions cost 0 (local ones run on a
    machine that is already paid for; simulated ones run nowhere)."""

    def __init__(self, aws: "AWSBackendSettings", instance_prices: Mapping[str, Mapping[str, float]],
                 prepare_path: Path, region: str | None = None):
        self.sm = aws.sagemaker
        # the region boto3 resolved (config, env, profile), else aws.region: a profile's region
        # must not be priced as us-east-1
        self.region = region or aws.aws.region
        self.prices = merged_prices(instance_prices)
        self.prepare_path = Path(prepare_path)

    def expected_seconds(self, preset: str) -> float:
        """Wall seconds one execution takes: prepare.py's budget (or the override) plus evaluation."""
        return time_budget(preset, self.prepare_path) * EVAL_OVERHEAD

    def hourly(self, backend: str, instance_type: str | None) -> float:
        if backend in FREE_BACKENDS or not instance_type:
            return 0.0
        try:
            return instance_price(instance_type, self.region, self.prices)
        except LedgerError:
            return 0.0

    def unpriced_note(self, backend: str, instance_type: str | None) -> str | None:
        """What to add to config.yaml when this run's instance has no price (else None)."""
        if backend in FREE_BACKENDS:
            return None
        try:
            instance_price(instance_type or self.sm.instance_type, self.region, self.prices)
        except LedgerError as exc:
            return f"{exc}; until then estimates and costs count it as $0 and --budget-usd cannot limit it"
        return None

    def estimate(self, backend: str, preset: str, instance_type: str | None = None) -> float:
        if backend in FREE_BACKENDS:
            return 0.0
        if self.unpriced_note(backend, instance_type):
            return 0.0   # as actual() does: the run goes on, the dry run and doctor say which price is missing
        # start-up is paid once per job and shared by the candidates packed into it
        return estimate_execution_cost(
            backend, instance_type or self.sm.instance_type, self.region, self.expected_seconds(preset),
            self.sm.use_spot, startup_s=self.sm.startup_estimate_s / max(1, self.sm.candidates_per_job),
            spot_billable_fraction=self.sm.spot_billable_fraction, prices=self.prices)

    def actual(self, backend: str, instance_type: str | None, billable_seconds: float | None) -> float:
        try:
            return execution_cost(backend, instance_type, self.region, billable_seconds, self.prices)
        except LedgerError:
            return 0.0   # an unpriced instance: the run goes on; the report shows billable seconds


def worked_example(candidates: int = 10, budget_s: float = 300.0, startup_s: float = 180.0,
                   instance_type: str = "ml.g5.xlarge", region: str = "us-east-1",
                   spot_billable_fraction: float = 0.35) -> str:
    """The README's cost example, computed here so the text cannot drift from the code."""
    price = instance_price(instance_type, region)
    per_spot = estimate_execution_cost("sagemaker", instance_type, region, budget_s, True, startup_s=startup_s,
                                       spot_billable_fraction=spot_billable_fraction)
    per_od = estimate_execution_cost("sagemaker", instance_type, region, budget_s, False, startup_s=startup_s)
    billable = (budget_s + startup_s) * spot_billable_fraction
    return (f"{candidates} candidates x ({budget_s:g} s training + {startup_s:g} s start-up) on {instance_type} "
            f"in {region} at ${price}/h on-demand:\n"
            f"  on-demand: {budget_s + startup_s:g} s x ${price}/3600 = ${per_od:.4f} per candidate, "
            f"${per_od * candidates:.2f} in all\n"
            f"  managed spot (billable = {spot_billable_fraction:g} x time, a "
            f"{1 - spot_billable_fraction:.0%} saving): {billable:g} s x ${price}/3600 = ${per_spot:.4f} per "
            f"candidate, ${per_spot * candidates:.2f} in all\n"
            f"  price source: {PRICE_SOURCE}")
