"""What each Claude model accepts, so config refuses at load time what the API would refuse with a 400.

A 400 at run time is a silent loss: the group goes to the heuristic and nobody asked for that.
The facts (Anthropic's model pages and migration guides, re-checked for issue 11):

- claude-sonnet-5-5 / claude-opus-5-5 / claude-haiku-5-5: adaptive thinking is on by default;
  forced tool choice (`any`, `tool`) and non-default sampling parameters are refused; effort
  low..max through `output_config.effort`.
- claude-sonnet-5 / claude-opus-5: adaptive by default, sampling refused, forced tool choice
  only with thinking off.
- claude-sonnet-4-6 and earlier, haiku-4-5: thinking off unless asked; forced tool choice and a
  non-default temperature only without thinking; sonnet-4-6 takes an effort, the 4.5s do not.

An unlisted model is not checked here (the API's answer is then the judge, and the console says so).
"""
from __future__ import annotations

from dataclasses import dataclass

EFFORTS = ("low", "medium", "high", "xhigh", "max")


@dataclass(frozen=True)
class ModelFacts:
    thinking_default_on: bool          # adaptive thinking without being asked
    forced_tool_choice: str            # "never" | "without_thinking"
    sampling: str                      # "refused" | "without_thinking"
    efforts: tuple[str, ...]           # accepted output_config.effort values; () = no effort parameter
    max_output: int


_NEW = ModelFacts(True, "never", "refused", EFFORTS, 128_000)
MODELS: dict[str, ModelFacts] = {
    "claude-sonnet-5-5": _NEW,
    "claude-opus-5-5": _NEW,
    "claude-haiku-5-5": _NEW,
    "claude-sonnet-5": ModelFacts(True, "without_thinking", "refused", EFFORTS, 128_000),
    "claude-opus-5": ModelFacts(True, "without_thinking", "refused", EFFORTS, 128_000),
    "claude-sonnet-4-6": ModelFacts(False, "without_thinking", "without_thinking",
                                    ("low", "medium", "high", "max"), 64_000),
    "claude-sonnet-4-5": ModelFacts(False, "without_thinking", "without_thinking", (), 64_000),
    "claude-haiku-4-5": ModelFacts(False, "without_thinking", "without_thinking", (), 64_000),
}

# Thinking tokens count toward max_tokens: the room added on top of the answer's own share per
# effort, so that a long think cannot cut the tool call off (then a repair round, or the heuristic).
THINKING_ROOM = {"low": 2_000, "medium": 6_000, "high": 12_000, "xhigh": 24_000, "max": 48_000}


def facts(model: str) -> ModelFacts | None:
    return MODELS.get(model)


def refusals(model: str, *, temperature: float | None, tool_choice: str, efforts: dict[str, str],
             efforts_set: bool) -> list[tuple[str, str]]:
    """(key, why) for every setting `model` would answer with a 400; [] when all are accepted."""
    f = facts(model)
    if f is None:
        return []
    out: list[tuple[str, str]] = []
    thinking = f.thinking_default_on
    if temperature is not None and (f.sampling == "refused" or thinking):
        out.append(("temperature", f"{model} refuses a sampling temperature (400); leave llm.temperature unset"))
    if tool_choice in ("any", "tool") and (f.forced_tool_choice == "never" or thinking):
        why = "refuses forced tool choice" if f.forced_tool_choice == "never" else \
            "refuses forced tool choice while thinking is on (its default)"
        out.append(("tool_choice", f"{model} {why} (400); use tool_choice: auto (the repair round asks again "
                                   f"when no tool is called)"))
    if efforts_set and efforts:
        if not f.efforts:
            out.append(("effort", f"{model} takes no effort parameter; remove llm.effort"))
        else:
            bad = {s: e for s, e in efforts.items() if e not in f.efforts}
            if bad:
                out.append(("effort", f"{bad} not accepted by {model}; expected one of {', '.join(f.efforts)}"))
    return out
