"""Dollars: GPU time and LLM tokens, per execution, candidate, generation and run; budget admission.

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
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

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
LOCAL_BACKENDS = frozenset({"local", "cpu", "gpu"})


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
    if backend in LOCAL_BACKENDS or not billable_seconds:
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
    if backend in LOCAL_BACKENDS:
        return 0.0
    seconds = max(0.0, startup_s) + max(0.0, expected_seconds)
    if use_spot:
        if not 0 < spot_billable_fraction <= 1:
            raise LedgerError(f"spot_billable_fraction must be in (0, 1], got {spot_billable_fraction}")
        seconds *= spot_billable_fraction
    return execution_cost(backend, instance_type, region, seconds, prices)


def estimate_from_settings(settings: Any, expected_seconds: float, candidates: int = 1) -> float:
    """Expected USD for `candidates` executions with the run's backend and SageMaker settings."""
    backend = settings.run.backend
    if backend in LOCAL_BACKENDS:
        return 0.0
    sm = settings.sagemaker
    per_job = max(1, sm.candidates_per_job)
    jobs = math.ceil(candidates / per_job)
    # start-up is paid once per job and shared by the candidates packed into it
    total = estimate_execution_cost(backend, sm.instance_type, settings.aws.region, expected_seconds * candidates,
                                    sm.use_spot, startup_s=sm.startup_estimate_s * jobs,
                                    spot_billable_fraction=sm.spot_billable_fraction,
                                    prices=merged_prices(settings.instance_prices))
    return total


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


# ----- aggregation -------------------------------------------------------------------------------
@dataclass
class CostSummary:
    gpu_usd: float = 0.0
    llm_usd: float = 0.0
    billable_seconds: float = 0.0
    training_seconds: float = 0.0
    per_candidate: dict[str, float] = field(default_factory=dict)
    per_generation: dict[Any, float] = field(default_factory=dict)

    @property
    def total_usd(self) -> float:
        return self.gpu_usd + self.llm_usd

    @property
    def spot_savings(self) -> float | None:
        return spot_savings(self.billable_seconds, self.training_seconds)

    def as_dict(self) -> dict:
        return {"total_usd": round(self.total_usd, 6), "gpu_usd": round(self.gpu_usd, 6),
                "llm_usd": round(self.llm_usd, 6), "billable_seconds": self.billable_seconds,
                "spot_savings": self.spot_savings, "per_candidate": dict(self.per_candidate),
                "per_generation": dict(self.per_generation)}


def execution_record_cost(record: Mapping[str, Any], prices: Mapping[str, Mapping[str, float]] | None = None) -> float:
    """Cost of one execution record: {"backend", "instance_type", "region", "billable_seconds"}.
    A record that already carries "cost_usd" keeps it (prices may have changed since)."""
    if record.get("cost_usd") is not None:
        return float(record["cost_usd"])
    return execution_cost(record.get("backend") or "local", record.get("instance_type"), record.get("region"),
                          record.get("billable_seconds"), prices)


def summarize(executions: Iterable[Mapping[str, Any]] = (), llm_calls: Iterable[Mapping[str, Any]] = (), *,
              prices: Mapping[str, Mapping[str, float]] | None = None,
              llm_prices: Mapping[str, Mapping[str, float]] | None = None) -> CostSummary:
    """Costs of a run (or any subset): executions carry "candidate_id", "generation", backend,
    instance_type, region, billable_seconds, training_seconds; LLM calls carry "model",
    "generation", optional "candidate_id", and token counts (or a "cost_usd")."""
    out = CostSummary()
    per_cand: dict[str, float] = defaultdict(float)
    per_gen: dict[Any, float] = defaultdict(float)
    for rec in executions:
        usd = execution_record_cost(rec, prices)
        out.gpu_usd += usd
        if rec.get("billable_seconds") and rec.get("training_seconds"):
            out.billable_seconds += float(rec["billable_seconds"])
            out.training_seconds += float(rec["training_seconds"])
        if rec.get("candidate_id") is not None:
            per_cand[str(rec["candidate_id"])] += usd
        if rec.get("generation") is not None:
            per_gen[rec["generation"]] += usd
    for call in llm_calls:
        usd = float(call["cost_usd"]) if call.get("cost_usd") is not None else llm_cost(call["model"], call, llm_prices or {})
        out.llm_usd += usd
        if call.get("candidate_id") is not None:
            per_cand[str(call["candidate_id"])] += usd
        if call.get("generation") is not None:
            per_gen[call["generation"]] += usd
    out.per_candidate, out.per_generation = dict(per_cand), dict(per_gen)
    return out


def per_candidate(executions: Iterable[Mapping[str, Any]], **kw: Any) -> dict[str, float]:
    return summarize(executions, **kw).per_candidate


def per_generation(executions: Iterable[Mapping[str, Any]], llm_calls: Iterable[Mapping[str, Any]] = (),
                   **kw: Any) -> dict[Any, float]:
    return summarize(executions, llm_calls, **kw).per_generation


def run_total(executions: Iterable[Mapping[str, Any]], llm_calls: Iterable[Mapping[str, Any]] = (), **kw: Any) -> float:
    return summarize(executions, llm_calls, **kw).total_usd


# ----- budget ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """`--budget-usd` admission: start new work only if what is spent, what running work is
    expected to cost (committed) and the new work's estimate all fit. None = unlimited."""

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

    def how_many(self, estimated_each_usd: float, spent_usd: float, committed_usd: float = 0.0) -> int | None:
        """How many executions of this estimate still fit (None = unlimited)."""
        left = self.remaining(spent_usd, committed_usd)
        if math.isinf(left) or estimated_each_usd <= 0:
            return None if math.isinf(left) else (None if left >= 0 else 0)
        return max(0, int((left + 1e-12) // estimated_each_usd))


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
