"""What the LLM proposer costs and how it behaves against the strict Messages-API stand-in. Prints
figures; asserts nothing.

Part 1, tokens and dollars per generation of N candidates (default 10, the 3/4/2/1 mix, so four
concurrent strategy calls): the real LLMProposer with the real SDK against tests/fake_anthropic.py,
which applies the API's caching rules (no read of an entry still being written, TTLs, minimum
length, settings spoiling entries) and counts thinking as output. Three generations on the
stand-in's clock: the first cold, the second 4 minutes later (inside the 5-minute TTL), the third
after a 12-minute GPU generation (TTL expired). The digest is a synthetic one of the configured
token budget (llm.digest_token_budget), i.e. a late-run prompt; `--digest-chars` changes it.
Dollars at config.yaml's llm.prices and at the prices Anthropic's pricing page lists now
(Sonnet 5.5 cache reads $0.10/MTok since 2026-10-07; 1-hour writes $4/MTok), and what the same
generation would cost if the shared prefix were written once and read by every call ("ideal").

Part 3, the same first generation re-sent the way issue 11 proposes (a max_tokens-0 warm-up of the
shared prefix, then the strategy calls reading it), with one effort per round or one per strategy,
under both readings of the docs (a settings change spoils every level, or message-level entries
only): what the "after" can reach, and which effort policy is cheaper.

Part 2, an API that never answers in time: llm.timeout_s and llm.max_retries as given, a
population of P (default 3), G generations (default 2) proposed back to back: requests sent and
wall time until the proposer hands the slots to the heuristic.

Figures (issue 11), generation of 10 at config.yaml's prices: before, gen 1 cold $0.287 (63,148 tokens
written, 0 read, 12,940 output, 3 write conflicts), gen 2 $0.201; an API that never answers: 123
requests and 6 min 45 s. After (warm-up, history breakpoint, one effort per round): gen 1 $0.183
(16,281 written, 62,692 read, 12,940 output, 0 conflicts), gen 2 $0.161; never answers: 6 requests
in 16 s (3 per generation, the warm-up's attempts; before: 129 requests in 5 min 58 s when re-measured).
Part 1's "ideal" row is the shared prefix written once with no warm-up request at all; the warm-up
writes the same tokens, so the proposer now lands within a cent of it ($0.183 vs $0.179).

    .venv/bin/python benchmarks/bench_llm_cost.py [--slots 10] [--part 1|2|3|all]
        [--timeout-s 2 --max-retries 2 --population 3 --generations 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.config import LLMSettings, Settings  # noqa: E402
from agent.proposing import strategy_slots  # noqa: E402
from agent.proposers.base import PastCandidate, ProposalRequest  # noqa: E402
from agent.proposers.heuristic import HeuristicProposer  # noqa: E402
from agent.proposers.llm import LLMProposer  # noqa: E402
from tests.fake_anthropic import FakeAnthropic, FakeClock, hang_reply, tokens_of  # noqa: E402

FIRST_BODIES: list[dict] = []    # part 1's first-generation requests, replayed by part 3
# Pricing page, 2026-10-24 re-check (see the notes): input, output, 5 m write, 1 h write, read.
DOCS_PRICES = {"claude-sonnet-5-5": {"input": 2.0, "output": 10.0, "write_5m": 2.5, "write_1h": 4.0, "read": 0.10}}


def synthetic_digest(chars: int) -> str:
    """History text shaped like agent/digest.py's output, `chars` long."""
    lines, i = [], 0
    while sum(len(x) for x in lines) < chars:
        i += 1
        lines.append(f"- g{i // 10:03d}-c{i % 10:02d} [moderate] \"MATRIX_LR x1.{i % 9}\": val_bpb 1.8{i % 7}2345 "
                     f"(1 run, {(-1) ** i * 0.0011 * (i % 5):+.6f} vs parent)\n  hypothesis: a slightly different "
                     f"matrix learning rate may converge faster within the fixed time budget.\n"
                     f"    - MATRIX_LR = 0.04\n    + MATRIX_LR = 0.0{4 + i % 5}\n")
    return "Noise: sigma 0.0021 over 2 runs; a win must clear 0.0042.\n" + "".join(lines)[:chars]


def request(slots: dict[str, int], generation: int, digest: str) -> ProposalRequest:
    a = PastCandidate("g001-c01", "moderate", "lower matrix lr", [], 1.80, diff="--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-MATRIX_LR = 0.04\n+MATRIX_LR = 0.035\n", hypothesis="less noise")
    b = PastCandidate("g001-c02", "conservative", "more warmdown", [], 1.81, diff="--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-WARMDOWN_RATIO = 0.5\n+WARMDOWN_RATIO = 0.6\n")
    return ProposalRequest(incumbent_source=(ROOT / "train.py").read_text(), incumbent_id="g000-baseline",
                           program_md=(ROOT / "program.md").read_text(), digest=digest, slots=slots,
                           preset="micro", generation=generation, seed=0, recent=[a, b])


def dollars(u: dict, p: dict, one_hour_read: bool = False) -> float:
    return (u["input_tokens"] * p["input"] + u["output_tokens"] * p["output"]
            + u["ephemeral_5m_input_tokens"] * p["write_5m"] + u["ephemeral_1h_input_tokens"] * p["write_1h"]
            + u["cache_read_input_tokens"] * p["read"]) / 1e6


def part1(args) -> None:
    cfg = Settings().llm
    model = cfg.model
    config_prices = cfg.prices[model]
    cp = {"input": config_prices["input"], "output": config_prices["output"], "write_5m": config_prices["cache_write"],
          "write_1h": config_prices.get("cache_write_1h", config_prices["cache_write"]),
          "read": config_prices["cache_read"]}
    dp = DOCS_PRICES[model]
    slots = strategy_slots(Settings().strategy_mix, args.slots)
    digest = synthetic_digest(args.digest_chars or cfg.digest_token_budget * 4)
    clock = FakeClock(0.0)
    print(f"Part 1: {model}, {args.slots} candidates per generation as {slots}, digest {len(digest)} chars, "
          f"max_concurrent_calls {cfg.max_concurrent_calls}, stand-in latency {args.latency_s}s")
    with FakeAnthropic(clock=clock, latency_s=args.latency_s) as fake:
        os.environ.update(ANTHROPIC_BASE_URL=fake.url, ANTHROPIC_API_KEY="sk-bench")
        booked: list[dict] = []
        prop = LLMProposer(cfg, prompts_dir=ROOT / "prompts", fallback=HeuristicProposer(seed=0),
                           record_call=lambda **c: booked.append(c))
        header = (f"{'generation':<34} {'reqs':>4} {'input':>7} {'write5m':>8} {'write1h':>7} {'read':>7} "
                  f"{'output':>7} {'(think)':>7} {'conflicts':>9} {'$config':>8} {'$docs':>7} {'$booked':>8}")
        print(header)
        for generation, (label, gap) in enumerate([("1: cold", 0), ("2: +4 min (inside the TTL)", 240),
                                                   ("3: +12 min (TTL expired)", 720)], 1):
            clock.advance(gap)
            seen = len(fake.message_requests())
            booked_before = len(booked)
            proposals = prop.propose(request(slots, generation, digest))
            reqs = fake.message_requests()[seen:]
            u = {k: 0 for k in ("input_tokens", "output_tokens", "cache_read_input_tokens",
                                "ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens", "thinking")}
            for r in reqs:
                for k in ("input_tokens", "output_tokens", "cache_read_input_tokens"):
                    u[k] += r.usage[k]
                for k, v in r.usage["cache_creation"].items():
                    u[k] += v
                u["thinking"] += r.usage["output_tokens_details"]["thinking_tokens"]
            conflicts = sum(1 for r in reqs if r.cache.pending_conflicts)
            llm = sum(p.proposer == "llm" and p.accepted for p in proposals)
            print(f"{label:<34} {len(reqs):>4} {u['input_tokens']:>7} {u['ephemeral_5m_input_tokens']:>8} "
                  f"{u['ephemeral_1h_input_tokens']:>7} {u['cache_read_input_tokens']:>7} {u['output_tokens']:>7} "
                  f"{u['thinking']:>7} {conflicts:>9} {dollars(u, cp):>8.4f} {dollars(u, dp):>7.4f} "
                  f"{sum(c['cost_usd'] for c in booked[booked_before:]):>8.4f}   ({llm} LLM candidates accepted)")
            if generation == 1:
                first = [r for r in reqs if r.body["max_tokens"] > 0]   # the strategy calls, not a warm-up
                FIRST_BODIES[:] = [r.body for r in first]
        # The ideal for generation 1: the prefix every call shares (tools, system, incumbent, history)
        # written once, read by every other call; each call's own ask uncached.
        last_block = [tokens_of({k: v for k, v in r.body["messages"][-1]["content"][-1].items() if k != "cache_control"})
                      for r in first]
        shared = min(r.cache.total - own for r, own in zip(first, last_block))   # tools..history
        total_in = sum(r.cache.total for r in first)
        ideal = {"input_tokens": total_in - shared * len(first), "output_tokens": sum(r.usage["output_tokens"] for r in first),
                 "cache_read_input_tokens": shared * (len(first) - 1), "ephemeral_5m_input_tokens": shared,
                 "ephemeral_1h_input_tokens": 0}
        print(f"{'1: ideal (shared prefix written once)':<34} {len(first):>4} {ideal['input_tokens']:>7} "
              f"{shared:>8} {0:>7} {ideal['cache_read_input_tokens']:>7} {ideal['output_tokens']:>7} {'':>7} {0:>9} "
              f"{dollars(ideal, cp):>8.4f} {dollars(ideal, dp):>7.4f}")
        print("Prompt tokens per call (stand-in tokenizer, ~4 chars/token): "
              + ", ".join(f"{r.settings.get('tool_choice', {}).get('type', '?')}:{r.cache.total}" for r in first)
              + f"; breakpoints per call: {[len(r.cache.breakpoints) for r in first]}; through the incumbent "
              f"{first[0].cache.breakpoints[1]['tokens']} tokens, through the history {shared}")
        out = sum(r.usage["output_tokens"] for r in first)
        think = sum(r.usage["output_tokens_details"]["thinking_tokens"] for r in first)
        print(f"Generation 1 output: {out} tokens of which {think} thinking (the stand-in's assumption for effort "
              f"'high', the default): ${out * cp['output'] / 1e6:.4f} of the generation's cost, "
              f"${(out - think) * cp['output'] / 1e6:.4f} without thinking")


def part2(args) -> None:
    cfg = LLMSettings(timeout_s=args.timeout_s, max_retries=args.max_retries)
    slots = strategy_slots(Settings().strategy_mix, args.population)
    print(f"\nPart 2: an API that never answers; llm.timeout_s {cfg.timeout_s}, llm.max_retries {cfg.max_retries}, "
          f"population {args.population} as {slots}, "
          f"{args.generations} generation(s)")
    with FakeAnthropic(hang_s=3600) as fake:
        fake.outage = hang_reply()
        os.environ.update(ANTHROPIC_BASE_URL=fake.url, ANTHROPIC_API_KEY="sk-bench")
        booked: list[dict] = []
        prop = LLMProposer(cfg, prompts_dir=ROOT / "prompts", fallback=HeuristicProposer(seed=0),
                           record_call=lambda **c: booked.append(c))
        total_start = time.monotonic()
        for generation in range(1, args.generations + 1):
            seen, start = len(fake.message_requests()), time.monotonic()
            proposals = prop.propose(request(slots, generation, "(nothing yet)"))
            took = time.monotonic() - start
            n = len(fake.message_requests()) - seen
            print(f"  generation {generation}: {n} requests, {took:.1f} s until the slots went to "
                  f"{sorted({p.proposer for p in proposals})}")
        took = time.monotonic() - total_start
        n = len(fake.message_requests())
        limit = (cfg.max_retries + 1) * sum(1 for s in slots if s != "crossover") * args.generations
        print(f"  total: {n} requests in {took:.0f} s ({int(took // 60)} min {took % 60:.0f} s); the issue's bound "
              f"(max_retries + 1) x calls = {limit} requests, (max_retries + 1) x timeout_s = "
              f"{(cfg.max_retries + 1) * cfg.timeout_s:.0f} s per generation")
        print(f"  booked: {len(booked)} calls, ${sum(c['cost_usd'] for c in booked):.4f}, outcomes "
              f"{sorted({c['outcome'] for c in booked})}")


def shared_prefix_body(body: dict, ask: list[dict] | None, effort: str | None, ttl: str) -> dict:
    """`body` rearranged the way issue 11 proposes: breakpoints on the system prompt and at the end
    of the history (train.py and the history are shared by every call of a round), the
    strategy's ask after them, uncached. `ask=None` makes the warm-up (max_tokens 0)."""
    def strip(block):
        return {k: v for k, v in block.items() if k != "cache_control"}
    mark = {"type": "ephemeral", **({"ttl": ttl} if ttl != "5m" else {})}
    first = [strip(b) for b in body["messages"][0]["content"]]
    shared = first[:2]
    shared[-1] = {**shared[-1], "cache_control": mark}
    out = {k: v for k, v in body.items() if k not in ("messages", "system")}
    out["system"] = [{**strip(b), "cache_control": mark} for b in body["system"]]
    out["messages"] = [{"role": "user", "content": shared + (ask if ask is not None else [{"type": "text", "text": "warmup"}])}]
    if ask is None:
        out["max_tokens"] = 0
    if effort:
        out["output_config"] = {"effort": effort}
    return out


def part3(args) -> None:
    """Replays part 1's first generation as a warm-up + fan-out, with one effort per round or one per
    strategy, under both readings of the docs on settings changes."""
    import anthropic
    from concurrent.futures import ThreadPoolExecutor
    if not FIRST_BODIES:
        part1(argparse.Namespace(**{**vars(args), "part": "1"}))
    dp = DOCS_PRICES[Settings().llm.model]
    per_strategy = {"conservative": "low", "moderate": "medium", "aggressive": "high", "crossover": "medium"}

    def strategy_of(body):
        text = body["messages"][0]["content"][-1]["text"]
        return next(s for s in per_strategy if f'strategy "{s}"' in text)
    print("\nPart 3: part 1's generation 1 re-sent as issue 11 proposes (warm-up with max_tokens 0, then the "
          "calls; breakpoints on system and at the end of the history), dollars at the docs' prices")
    print(f"{'variant':<66} {'reqs':>4} {'input':>6} {'write':>6} {'read':>6} {'output':>6} {'conflicts':>9} {'$docs':>7}")
    for scope in ("all", "messages"):
        for label, efforts in (("one effort per round (high)", None), ("effort per strategy (low/medium/high)", per_strategy)):
            with FakeAnthropic(clock=FakeClock(0.0), latency_s=args.latency_s, settings_scope=scope) as fake:
                c = anthropic.Anthropic(base_url=fake.url, api_key="sk-bench", max_retries=0, timeout=30)
                bodies = FIRST_BODIES
                warm_efforts = sorted({efforts[strategy_of(b)] for b in bodies}) if efforts else [None]
                for effort in warm_efforts:      # a warm-up per distinct setting: the setting is in the prefix
                    c.messages.create(**shared_prefix_body(bodies[0], None, effort, "5m"))

                def call(body):
                    ask = [{k: v for k, v in body["messages"][0]["content"][-1].items() if k != "cache_control"}]
                    effort = efforts[strategy_of(body)] if efforts else None
                    return c.messages.create(**shared_prefix_body(body, ask, effort, "5m"))
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(call, bodies))
                u = fake.total_usage()
                reqs = fake.message_requests()
                print(f"{label + ', settings spoil ' + ('all levels' if scope == 'all' else 'messages only'):<66} "
                      f"{len(reqs):>4} {u['input_tokens']:>6} {u['cache_creation_input_tokens']:>6} "
                      f"{u['cache_read_input_tokens']:>6} {u['output_tokens']:>6} {len(fake.write_conflicts()):>9} "
                      f"{dollars(u, dp):>7.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", default="all", choices=("1", "2", "3", "all"))
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--digest-chars", type=int, default=0)
    parser.add_argument("--latency-s", type=float, default=0.5, help="stand-in answer time (concurrency overlap)")
    parser.add_argument("--timeout-s", type=float, default=2.0)
    parser.add_argument("--max-retries", type=int, default=2)
    parser.add_argument("--population", type=int, default=3)
    parser.add_argument("--generations", type=int, default=2)
    args = parser.parse_args()
    if args.part in ("1", "all"):
        part1(args)
    if args.part in ("3", "all"):
        part3(args)
    if args.part in ("2", "all"):
        part2(args)


if __name__ == "__main__":
    main()
