"""config.yaml -> typed settings.

One pydantic model per section. Unknown keys are errors (a typo must not silently
fall back to a default), and every error names the file, the dotted key and what
was expected. The earlier serverless pipeline's keys (aws.*, s3.*, sagemaker.*,
pipeline.*) are accepted so its users can bring their file.

The sections a runner reads (local, aws, s3, sagemaker; simulated) are defined next to the
runners (sandbox/runners/settings.py; simulated.py), the early-stopping rule's next to the rule
(agent/early_stop.py); this module composes them with the researcher's own sections into one
`Settings`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from agent.early_stop import EarlyStopSettings
from agent.research_settings import AllocationSettings, ExplorationSettings, NotebookSettings, NoveltySettings
from agent.proposers.base import STRATEGIES
from sandbox.runners.simulated import SimulatedSettings
from sandbox.runners.settings import (AWSBackendSettings, AWSSettings, LocalSettings, S3Settings,
                                      SageMakerSettings, Section)


class ConfigError(Exception):
    """A config file that cannot be used; the message says where and why."""


class RunSettings(Section):
    preset: Literal["auto", "gpu", "cpu", "micro"] = "auto"
    # simulated: a virtual clock, nothing trains (sandbox/runners/simulated.py); its results are
    # marked simulated everywhere and a run's backend is fixed: simulated and real never mix
    backend: Literal["local", "sagemaker", "simulated"] = "local"
    # generations: each generation waits for its slowest member, then selects; async: no barrier,
    # a freed slot gets the next candidate and results are judged against the incumbent of their
    # moment (agent/async_schedule.py)
    schedule: Literal["generations", "async"] = "async"
    proposer: Literal["auto", "llm", "heuristic"] = "auto"   # auto: llm when ANTHROPIC_API_KEY is set
    generations: int = Field(2, ge=1)
    population: int = Field(4, ge=1)
    seed: int = 0
    # run each accepted candidate for a few steps at the micro preset here before it is launched:
    # auto = only for the sagemaker backend, where a crash would waste a paid job start-up
    preflight: Literal["auto", "always", "never"] = "auto"
    budget_usd: Optional[float] = Field(None, gt=0)
    max_hours: Optional[float] = Field(None, gt=0)
    runs_dir: str = "runs"


class SelectionSettings(Section):
    min_delta: float = Field(0.0005, ge=0)     # smallest val_bpb gain worth keeping, whatever the noise
    k_sigma: float = Field(2.0, ge=0)          # a win must exceed k x pooled sigma of identical runs
    baseline_repeats: int = Field(2, ge=2)     # generation 0 runs the baseline this many times
    controls_per_generation: int = Field(1, ge=0)  # incumbent re-runs in every later generation
    confirm_margin: float = Field(2.0, ge=1)   # a win below confirm_margin x threshold is re-run first
    prior_sigma: Optional[float] = Field(None, ge=0)  # sigma to assume before two identical runs exist
    # async schedule: one control re-run of the incumbent per this many candidate launches
    # (null: population / controls_per_generation, the generations schedule's rate)
    control_every: Optional[int] = Field(None, ge=1)


# keys that lost their meaning, and what replaces them (a silent ignore would hide a changed behaviour)
RETIRED_LLM_KEYS = {
    "unreachable_after_s": "the SDK's retries are the only retry layer now; an unanswered call gives up after "
                           "about (llm.max_retries + 1) x llm.timeout_s and the heuristic takes the round: "
                           "set llm.max_retries and llm.timeout_s instead",
}


class LLMSettings(Section):
    # claude-sonnet-5-5: the current Sonnet in the SDK's model list (claude-sonnet-4-5 is deprecated there)
    model: str = "claude-sonnet-5-5"
    max_tokens: int = Field(8000, ge=256)
    # None = the model's own default; Sonnet 5 and later answer 400 to any other sampling value
    temperature: Optional[float] = Field(None, ge=0, le=1)
    # "auto" + the system prompt + an llm-no-tool repair round works on every model; forcing
    # ("tool"/"any") is refused by claude-sonnet-5-5 and by any model with thinking on
    tool_choice: Literal["auto", "any", "tool"] = "auto"
    max_repairs: int = Field(2, ge=0)          # is_error tool_result rounds per call
    max_concurrent_calls: int = Field(4, ge=1)
    usd_cap: float = Field(5.0, gt=0)          # LLM dollars per run; past it the heuristic takes over
    # The one retry layer is the SDK's: a request gets timeout_s, and up to max_retries more tries
    # (connection errors, timeouts, 408/409/429/5xx, honouring retry-after). A call that still fails
    # hands the round to the heuristic, so an API that never answers costs ~(max_retries+1) x timeout_s.
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0)
    # Answer room in tokens; each call's max_tokens adds room for its effort's thinking
    # (agent/llm_models.THINKING_ROOM), because thinking counts toward max_tokens.
    # (max_tokens above is that answer room.)
    # Effort per strategy: small edits need little reasoning, bold ones more. Sent as
    # output_config.effort to models that take it (thinking is adaptive, and billed as output).
    effort: dict[str, Literal["low", "medium", "high", "xhigh", "max"]] = Field(default_factory=lambda: {
        "conservative": "low", "moderate": "medium", "aggressive": "high", "crossover": "medium"})
    # A change of effort spoils cached prefixes (every level, on the strict reading of the docs), so
    # per-strategy efforts mean one prefix write per distinct effort. benchmarks/bench_llm_cost.py
    # part 3, generation of 10: one effort per round (the round's highest) $0.176, per strategy
    # $0.198. true: every call of a round uses the highest effort among its strategies.
    one_effort_per_round: bool = True
    # prompt-cache lifetime of the shared prefix: auto = 1h when rounds are more than 5 minutes apart
    # (measured, or foreseen from the preset's time budget), else 5m. A 1h write costs 2x input, 5m 1.25x.
    cache_ttl: Literal["auto", "5m", "1h"] = "auto"
    # a max_tokens-0 request that writes the round's shared prefix before the strategy calls read it
    # (a sibling cannot read an entry still being written); off: the calls run at once and each writes it
    warm_up: bool = True
    digest_token_budget: int = Field(6000, ge=200)
    # USD per million tokens; cache writes/reads per Anthropic's pricing page
    prices: dict[str, dict[str, float]] = Field(default_factory=lambda: {
        "claude-sonnet-5-5": {"input": 2.0, "output": 10.0, "cache_write": 2.50, "cache_write_1h": 4.0,
                              "cache_read": 0.20},
        "claude-opus-5-5": {"input": 4.0, "output": 20.0, "cache_write": 5.00, "cache_write_1h": 8.0,
                            "cache_read": 0.20},
        "claude-haiku-5-5": {"input": 0.10, "output": 0.50, "cache_write": 0.125, "cache_write_1h": 0.20,
                             "cache_read": 0.01},
        "claude-sonnet-4-5": {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_write_1h": 6.0,
                              "cache_read": 0.30},
        "claude-opus-4-1": {"input": 15.0, "output": 75.0, "cache_write": 18.75, "cache_write_1h": 30.0,
                            "cache_read": 1.50},
        "claude-haiku-4-5": {"input": 1.0, "output": 5.0, "cache_write": 1.25, "cache_write_1h": 2.0,
                             "cache_read": 0.10},
    })

    @model_validator(mode="before")
    @classmethod
    def _retired_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, replacement in RETIRED_LLM_KEYS.items():
                if key in data:
                    raise ValueError(f"llm.{key} was removed: {replacement}")
        return data

    @model_validator(mode="after")
    def _what_the_model_refuses(self):
        from agent.llm_models import refusals
        problems = refusals(self.model, temperature=self.temperature, tool_choice=self.tool_choice,
                            efforts=self.effort, efforts_set="effort" in self.model_fields_set)
        if problems:
            raise ValueError("; ".join(f"llm.{key}: {why}" for key, why in problems))
        unknown = sorted(set(self.effort) - set(STRATEGIES))
        if unknown:
            raise ValueError(f"llm.effort: unknown strategies {unknown}; expected some of {list(STRATEGIES)}")
        return self


class PipelineSettings(Section):
    """The serverless pipeline's `pipeline:` section (its config.yaml.example), so its users can
    bring their file: each key takes effect where it means the same thing here (see
    Settings._apply_pipeline); any other key is accepted with a note saying it is ignored."""
    model_config = ConfigDict(extra="allow")
    generations: Optional[int] = Field(None, ge=1)
    num_generations: Optional[int] = Field(None, ge=1)     # -> run.generations
    max_generations: Optional[int] = Field(None, ge=1)
    population: Optional[int] = Field(None, ge=1)
    population_size: Optional[int] = Field(None, ge=1)     # -> run.population
    budget_usd: Optional[float] = Field(None, gt=0)
    # candidates per strategy in each generation -> strategy_mix (the same four strategies)
    num_conservative: Optional[int] = Field(None, ge=0)
    num_moderate: Optional[int] = Field(None, ge=0)
    num_aggressive: Optional[int] = Field(None, ge=0)
    num_crossover: Optional[int] = Field(None, ge=0)


# The serverless pipeline's `model_defaults:` (depth, device_batch_size, ...) were train.py
# settings its pipeline wrote into every candidate. Here the baseline is the project's own
# train.py, which the agent edits: nothing overrides it from config.
MODEL_DEFAULTS_NOTE = ("model_defaults.{key} is ignored: the baseline is your train.py as it is (the agent edits it); "
                       "set {key} in train.py itself (its constant {const}) if you want {value!r}")


class Settings(Section):
    # `model_defaults` (a serverless pipeline key) would clash with pydantic's "model_" namespace
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    run: RunSettings = Field(default_factory=RunSettings)
    strategy_mix: dict[str, int] = Field(default_factory=lambda: {
        "conservative": 3, "moderate": 4, "aggressive": 2, "crossover": 1})
    selection: SelectionSettings = Field(default_factory=SelectionSettings)
    local: LocalSettings = Field(default_factory=LocalSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    aws: AWSSettings = Field(default_factory=AWSSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    sagemaker: SageMakerSettings = Field(default_factory=SageMakerSettings)
    simulated: SimulatedSettings = Field(default_factory=SimulatedSettings)
    early_stop: EarlyStopSettings = Field(default_factory=EarlyStopSettings)
    novelty: NoveltySettings = Field(default_factory=NoveltySettings)   # near-duplicate rejection
    notebook: NotebookSettings = Field(default_factory=NotebookSettings)  # lessons after each generation
    allocation: AllocationSettings = Field(default_factory=AllocationSettings)  # slots follow gain per compute
    exploration: ExplorationSettings = Field(default_factory=ExplorationSettings)  # branch and repair slots
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    model_defaults: dict[str, Any] = Field(default_factory=dict)   # serverless pipeline key: ignored, with a note
    # USD per instance-hour, on-demand; per region with a "default" fallback (see agent/ledger.py)
    instance_prices: dict[str, dict[str, float]] = Field(default_factory=dict)

    _notes: list[str] = PrivateAttr(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """Keys accepted but ignored (or mapped), each saying what it is ignored for and what to
        use instead; the commands print them once on loading."""
        return list(self._notes)

    @field_validator("strategy_mix")
    @classmethod
    def _known_strategies(cls, mix: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(mix) - set(STRATEGIES))
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; expected some of {list(STRATEGIES)}")
        if any(v < 0 for v in mix.values()) or sum(mix.values()) == 0:
            raise ValueError("weights must be >= 0 and not all 0")
        return mix

    @property
    def aws_backend(self) -> AWSBackendSettings:
        """The sections the SageMaker backend reads (the same objects, not copies)."""
        return AWSBackendSettings(aws=self.aws, s3=self.s3, sagemaker=self.sagemaker)

    @model_validator(mode="after")
    def _apply_pipeline(self):
        p = self.pipeline
        notes = self._notes
        gens = p.generations or p.num_generations or p.max_generations
        pop = p.population or p.population_size
        fields = self.run.model_fields_set
        if gens and "generations" not in fields:
            self.run.generations = gens
        if pop and "population" not in fields:
            self.run.population = pop
        if p.budget_usd and "budget_usd" not in fields:
            self.run.budget_usd = p.budget_usd
        counts = {name: getattr(p, f"num_{name}") for name in STRATEGIES if getattr(p, f"num_{name}", None) is not None}
        if counts:
            if "strategy_mix" in self.model_fields_set:
                notes.append(f"pipeline.num_{{{','.join(counts)}}} are ignored: strategy_mix is set too, and it wins")
            elif sum(counts.values()) == 0:
                raise ValueError("pipeline.num_conservative/num_moderate/num_aggressive/num_crossover are all 0")
            else:
                # set without validate_assignment, which would run this validator again
                self.__dict__["strategy_mix"] = self._known_strategies({n: counts.get(n, 0) for n in STRATEGIES})
                total = sum(counts.values())
                if not pop and "population" not in fields:
                    self.run.population = total   # the pipeline's population is the sum of its allocation
                elif self.run.population != total:
                    notes.append(f"pipeline strategy counts add up to {total} but the population is "
                                 f"{self.run.population}: strategy_mix {self.strategy_mix} is applied as proportions")
        for key in sorted(p.model_extra or {}):
            notes.append(f"pipeline.{key} is ignored: this project has no such setting (see config.yaml's run: and "
                         f"selection: sections for what a run can be told)")
        consts = {"depth": "DEPTH", "device_batch_size": "DEVICE_BATCH_SIZE", "total_batch_size": "TOTAL_BATCH_SIZE",
                  "window_pattern": "WINDOW_PATTERN"}
        for key, value in self.model_defaults.items():
            notes.append(MODEL_DEFAULTS_NOTE.format(key=key, const=consts.get(key, key.upper()), value=value))
        if self.s3.bucket == "":
            notes.append("s3.bucket is empty: the SageMaker default bucket sagemaker-<region>-<account> is used "
                         "(`autoresearch aws setup` creates it); set s3.bucket to choose another")
        if self.s3.tokenizer_prefix:
            notes.append(f"s3.tokenizer_prefix is set: the serverless pipeline's data layout is used -- gpu data "
                         f"straight under s3.data_prefix ({self.s3.data_prefix}), its tokenizer under "
                         f"{self.s3.tokenizer_prefix}; `autoresearch prepare --upload` writes that layout too")
        return self


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"]) or "(top level)"
        got = e.get("input")
        got_txt = "" if isinstance(got, dict) else f" (got {got!r})"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {key}: {msg}{got_txt}")
    return "\n".join(lines)


def load_settings(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Load config.yaml (default: ./config.yaml when present, else built-in defaults).

    `overrides` maps dotted keys ("run.population") to values from the command line.
    """
    cfg_path = Path(path) if path else Path("config.yaml")
    data: dict[str, Any] = {}
    if cfg_path.exists():
        try:
            loaded = yaml.safe_load(cfg_path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{cfg_path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{cfg_path}: expected a mapping of sections at the top level, got {type(loaded).__name__}")
        data = loaded
    elif path:
        raise ConfigError(f"{cfg_path}: config file not found")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {}) if isinstance(node.get(key, {}), dict) else node
        node[leaf] = value
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(cfg_path, err)) from None
