"""What each Claude model accepts: the refusal rules of the local Messages-API stand-in.

One table, one job: given a request body, say which 400 (or 404) the real API would answer, and
what the request's effective thinking / effort settings are. The facts and their sources are in
the project notes (llm-facts.md); the ones that matter most:

- Claude Sonnet 5.5 (`claude-sonnet-5-5`): adaptive thinking on by default; `thinking.type`
  accepts only "adaptive" and "between_tools" ("enabled" and "disabled" are 400s); forced
  tool choice (`any` / `tool`) is a 400, on count_tokens too; non-default temperature / top_p /
  top_k are 400s; assistant prefill is a 400; effort low..max, default high; between_tools only
  at low/medium/high effort and with no other thinking field; minimum cacheable prompt 512 tokens;
  thinking blocks are signed over the conversation before them.
  https://platform.claude.com/docs/en/models/sonnet-5-5/migration-guide
- Claude Opus 5.5: thinking always on (adaptive only), forced tool use a 400, default effort
  medium, minimum cacheable prompt 512.  .../models/opus-5-5/overview
- Claude Sonnet 5: adaptive by default, "disabled" accepted, "enabled" a 400, sampling a 400.
- Claude Sonnet 4.6 and earlier, Haiku 4.5: thinking off unless asked; forced tool use is
  incompatible with thinking; Haiku 4.5's minimum cacheable prompt is 4096 tokens.
  https://platform.claude.com/docs/en/build-with-claude/prompt-caching#cache-limitations

Messages quoted from the documentation are marked "(docs)"; the others are this stand-in's own
wording of a documented refusal (the docs name the refusal, not its text).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

EFFORTS = ("low", "medium", "high", "xhigh", "max")
FORCED = {"any", "tool"}


@dataclass(frozen=True)
class ModelRules:
    name: str
    min_cacheable: int                   # tokens; a shorter prefix is silently not cached
    thinking_default: str                # "adaptive" | "off": what a request without `thinking` gets
    thinking_types: frozenset[str]       # accepted thinking.type values
    efforts: tuple[str, ...] = ()        # accepted output_config.effort values; () = no effort parameter
    default_effort: str | None = None
    forced_tool_choice: str = "never"    # "never" | "without_thinking"
    sampling: str = "refused"            # "refused" | "without_thinking" (temperature 1 only with thinking)
    prefill: bool = False
    max_output: int = 128_000
    between_tools_efforts: frozenset[str] = frozenset()
    binds_thinking: bool = False         # a thinking block is signed over the conversation before it
    display_default: str = "omitted"     # thinking text returned: "omitted" (empty) | "summarized"
    retired: bool = False                # the Claude API answers 404
    verified: bool = True                # False: some rules are guesses, say so in test output

    def thinking_allowed(self, kind: str) -> bool:
        return kind in self.thinking_types


_NEW = dict(efforts=EFFORTS, sampling="refused", prefill=False, forced_tool_choice="never")
MODELS: dict[str, ModelRules] = {m.name: m for m in (
    ModelRules("claude-sonnet-5-5", 512, "adaptive", frozenset({"adaptive", "between_tools"}),
               default_effort="high", between_tools_efforts=frozenset({"low", "medium", "high"}),
               binds_thinking=True, **_NEW),
    ModelRules("claude-opus-5-5", 512, "adaptive", frozenset({"adaptive"}), default_effort="medium",
               binds_thinking=True, **_NEW),
    # Haiku 5.5 (2026-10-07): adaptive by default, default effort medium. Its minimum cacheable
    # prompt and its stance on forced tool choice were not found in the docs searched.
    ModelRules("claude-haiku-5-5", 512, "adaptive", frozenset({"adaptive", "disabled"}), default_effort="medium",
               binds_thinking=True, verified=False, **_NEW),
    ModelRules("claude-sonnet-5", 1024, "adaptive", frozenset({"adaptive", "disabled"}), default_effort="high",
               **{**_NEW, "forced_tool_choice": "without_thinking"}),
    ModelRules("claude-opus-5", 512, "adaptive", frozenset({"adaptive", "disabled"}), default_effort="high",
               **{**_NEW, "forced_tool_choice": "without_thinking"}),
    ModelRules("claude-sonnet-4-6", 2048, "off", frozenset({"adaptive", "disabled", "enabled"}),
               efforts=("low", "medium", "high", "max"), default_effort="high",
               forced_tool_choice="without_thinking", sampling="without_thinking", prefill=False,
               max_output=64_000, display_default="summarized"),
    ModelRules("claude-haiku-4-5", 4096, "off", frozenset({"disabled", "enabled"}),
               forced_tool_choice="without_thinking", sampling="without_thinking", prefill=True,
               max_output=64_000, display_default="summarized"),
    ModelRules("claude-sonnet-4-5", 1024, "off", frozenset({"disabled", "enabled"}),
               forced_tool_choice="without_thinking", sampling="without_thinking", prefill=True,
               max_output=64_000, display_default="summarized"),
    # "Claude Opus 4.1 (retired, except on Bedrock and Google Cloud)": docs/en/about-claude/pricing
    ModelRules("claude-opus-4-1", 1024, "off", frozenset({"disabled", "enabled"}), retired=True),
)}


@dataclass
class Settings:
    """A request's effective generation settings (defaults filled in), as the API would run it."""

    thinking: str                  # "adaptive" | "between_tools" | "enabled" | "off"
    budget_tokens: int | None
    effort: str | None
    display: str
    tool_choice: dict = field(default_factory=dict)

    @property
    def thinking_on(self) -> bool:
        return self.thinking in ("adaptive", "enabled")

    def cache_key(self) -> str:
        """What of the settings is rendered into the prompt (thinking, effort): a change spoils caches."""
        return f"thinking={self.thinking}/{self.budget_tokens}/effort={self.effort}"

    def tool_choice_key(self) -> str:
        return repr(sorted(self.tool_choice.items()))


def settings_of(rules: ModelRules, body: dict) -> Settings:
    thinking = body.get("thinking") or {}
    kind = thinking.get("type") or rules.thinking_default
    if kind == "disabled":
        kind = "off"
    effort = (body.get("output_config") or {}).get("effort") or rules.default_effort
    return Settings(thinking=kind, budget_tokens=thinking.get("budget_tokens"), effort=effort,
                    display=thinking.get("display") or rules.display_default,
                    tool_choice=dict(body.get("tool_choice") or {"type": "auto"}))


def refusal(rules: ModelRules, body: dict, *, count_tokens: bool = False) -> str | None:
    """The 400 message the API answers for this body on this model, or None when it is accepted."""
    thinking = body.get("thinking")
    if thinking is not None:
        kind = thinking.get("type")
        if kind == "enabled" and not rules.thinking_allowed("enabled"):
            return ('"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive" and '
                    '"output_config.effort" to control thinking behavior.')                         # (docs)
        if kind == "disabled" and not rules.thinking_allowed("disabled"):
            if rules.thinking_allowed("between_tools"):
                return ('"thinking.type.disabled" is not supported for this model. Use "thinking.type.between_tools" '
                        'for the lowest thinking setting, or "thinking.type.adaptive" and "output_config.effort" '
                        'to control thinking behavior.')                                               # (docs)
            return '"thinking.type.disabled" is not supported for this model: thinking is always on.'
        if kind not in ("enabled", "disabled") and not rules.thinking_allowed(kind or ""):
            return f"thinking.type: {kind!r} is not supported for this model"
        if kind == "enabled":
            budget = thinking.get("budget_tokens")
            if not isinstance(budget, int) or budget < 1024:
                return "thinking.budget_tokens: must be at least 1024"
            if not count_tokens and budget >= int(body.get("max_tokens") or 0):
                return "max_tokens must be greater than thinking.budget_tokens"
        if kind == "between_tools" and set(thinking) - {"type"}:
            return f"thinking.type.between_tools takes no other field (got {sorted(set(thinking) - {'type'})})"
    settings = settings_of(rules, body)
    effort = (body.get("output_config") or {}).get("effort")
    if effort is not None:
        if not rules.efforts:
            return "output_config.effort: this model does not support the effort parameter"
        if effort not in rules.efforts:
            return f"output_config.effort: {effort!r} is not one of {', '.join(rules.efforts)} for this model"
    if settings.thinking == "between_tools" and settings.effort not in rules.between_tools_efforts:
        return (f'"thinking.type.between_tools" is not supported at effort {settings.effort!r}; use '
                f'"thinking.type.adaptive" for xhigh or max')
    choice = (body.get("tool_choice") or {}).get("type")
    if choice in FORCED:
        if rules.forced_tool_choice == "never":
            return 'tool_choice: type "tool" and "any" are not supported for this model.'             # (docs)
        if settings.thinking_on:
            return "Thinking may not be enabled when tool_choice forces tool use."
    for key in ("temperature", "top_p", "top_k"):
        if key not in body:
            continue
        value = body[key]
        if rules.sampling == "refused" and not (key == "temperature" and value == 1):
            return f"{key}: non-default sampling parameters are not supported for this model"
        if rules.sampling == "without_thinking" and settings.thinking_on and not (key == "temperature" and value == 1):
            return f"{key}: may only be left at its default (temperature 1) when thinking is enabled"
    if "temperature" in body and "top_p" in body and rules.sampling != "refused":
        return "temperature and top_p cannot both be specified for this model. Please use only one."
    if "temperature" in body and not (isinstance(body["temperature"], (int, float)) and 0 <= body["temperature"] <= 1):
        return "temperature: Input should be less than or equal to 1"
    messages = body.get("messages") or []
    if messages and messages[-1].get("role") == "assistant" and not rules.prefill:
        return ("This model does not support assistant message prefill. The conversation must end with a "
                "user message.")                                                                      # (docs)
    if not count_tokens:
        max_tokens = body.get("max_tokens")
        if max_tokens > rules.max_output:
            return f"max_tokens: {max_tokens} > {rules.max_output}, which is the maximum allowed for {rules.name}"
        if max_tokens == 0:
            # cache pre-warming: docs/en/build-with-claude/prompt-caching#pre-warming-the-cache
            if body.get("stream") or (thinking or {}).get("type") == "enabled" or \
                    (body.get("output_config") or {}).get("format") or choice in FORCED:
                return "max_tokens: 0 (cache pre-warming) cannot be combined with stream, thinking.type.enabled, " \
                       "output_config.format or a forced tool_choice"
    return None


def thinking_tokens(settings: Settings, table: dict[str, int], prompt_tokens: int) -> int:
    """Tokens of internal reasoning the stand-in spends (billed as output, inside max_tokens): the
    effort's figure from `table`, less for a short prompt (adaptive thinking thinks less on easy asks)."""
    if settings.thinking == "enabled":
        return min(math.ceil(0.8 * (settings.budget_tokens or 0)), prompt_tokens)
    if settings.thinking != "adaptive":
        return 0
    return min(table.get(settings.effort or "high", table.get("high", 0)), prompt_tokens // 2)
