"""The learned difficulty scorer: selection skill, the rules around it, and robustness.

A fast regression subset of tests/benchmarks/eval_routing.py (whose full figures are in
tests/benchmarks/README.md): APGR on a fixed held-out slice of GSM8K and MMLU against the
prompt-length and random baselines, the hand-written probes, greetings, follow-ups, languages,
every wire, determinism and odd bodies.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lcm_jupyter.core import difficulty
from lcm_jupyter.core.difficulty import THRESHOLD, Difficulty, score_body
from tests.benchmarks import eval_routing as ev

HARD = "Prove that there are infinitely many primes of the form 4k + 3."
EASY = "What's a good name for a golden retriever puppy?"


def chat(*turns: str) -> dict:
    """An OpenAI chat body of alternating user/assistant turns."""
    return {"model": "gpt-4o", "messages": ev.chat(*turns)}


def routed(d: Difficulty) -> bool:
    return d.readable and d.score < THRESHOLD


# --- selection skill on held-out public data ---------------------------------------------------


@pytest.fixture(scope="module")
def outcome_slices() -> dict[str, list[dict]]:
    """A fixed slice of the test split of GSM8K and MMLU (never trained on)."""
    if not (ev.SHARED / "gsm8k.jsonl").exists():
        pytest.skip("../shared/data/routing is not beside the checkout")
    items = [
        i for i in ev.load_shared() if i["dataset"] in ("gsm8k", "mmlu") and i["split"] == "test"
    ]
    items = [i for i in items if not i["contaminated"]]
    return {
        "gsm8k": [i for i in items if i["dataset"] == "gsm8k"],
        # Every third MMLU test prompt: all subjects, about 1,400 prompts.
        "mmlu": [i for i in items if i["dataset"] == "mmlu"][::3],
    }


@pytest.mark.parametrize("name", ["gsm8k", "mmlu"])
def test_apgr_beats_length_and_random_baselines(outcome_slices, name):
    items = outcome_slices[name]
    strong = [i["strong"] for i in items]
    weak = [i["weak"] for i in items]
    scores = [score_body(ev.body(i)).score for i in items]
    ours = ev.router_figures(scores, strong, weak)["apgr"]
    length = ev.router_figures([float(ev.prompt_chars(i)) for i in items], strong, weak)["apgr"]
    rand = ev.random_figures(strong, weak, seeds=20)["apgr"]
    assert ours > length, (ours, length)
    assert ours > rand + 0.05, (ours, rand)


def test_no_cliff_in_scores(outcome_slices):
    scores = [round(score_body(ev.body(i)).score, 6) for i in outcome_slices["mmlu"]]
    most = max(scores.count(s) for s in set(scores))
    assert most / len(scores) < 0.02


# --- the probes and the rules around the model -------------------------------------------------


def _probes() -> list[dict]:
    path = Path(__file__).parent / "data/routing_probes.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


# Probes the scorer is known to route down (eval_routing.py lists them): none at present.
KNOWN_MISSES: frozenset[str] = frozenset()


def test_hard_probes_keep_the_strong_model():
    missed = []
    for probe in _probes():
        if probe["expect"] != "keep strong":
            continue
        d = score_body({"messages": probe.get("messages") or ev.chat(probe["prompt"])})
        if routed(d):
            missed.append(probe.get("prompt") or probe["messages"][-1]["content"])
    assert set(missed) <= KNOWN_MISSES, missed


def test_everyday_probes_mostly_route():
    probes = [p for p in _probes() if p["expect"] == "may route"]
    down = [
        routed(score_body({"messages": p.get("messages") or ev.chat(p["prompt"])})) for p in probes
    ]
    assert sum(down) >= len(probes) // 2


@pytest.mark.parametrize(
    "lead",
    ["Hi! ", "hello there, ", "ok so ", "Thanks! ", "Good morning :) ", "hey, ", "Okay, great. "],
)
def test_pleasantries_in_front_change_nothing(lead):
    plain = score_body(chat(HARD))
    greeted = score_body(chat(lead + HARD))
    assert abs(greeted.score - plain.score) < 1e-9
    assert not routed(greeted)


def test_trailing_thanks_changes_nothing():
    # The closing "Thanks!" goes, with the full stop before it.
    thanked = score_body(chat(HARD + " Thanks!")).score
    assert thanked == pytest.approx(score_body(chat(HARD[:-1])).score)


def test_pleasantry_alone_is_chit_chat():
    d = score_body(chat("thanks, that worked!"))
    assert routed(d)
    assert d.reason == "greeting or thanks only"


@pytest.mark.parametrize("follow", ["and for 6k+5?", "why?", "ok", "thanks!", "shorter please"])
def test_short_follow_up_inherits_a_hard_conversation(follow):
    d = score_body(chat(HARD, "Suppose finitely many such primes p1..pn ...", follow))
    assert not routed(d)
    assert d.score >= difficulty.DECAY * difficulty.score_text(HARD) - 1e-9


def test_follow_up_about_code_in_the_answer_keeps_strong():
    code = "Here is the fix:\n```python\ndef f(xs):\n    return sorted(set(xs))\n```"
    d = score_body(chat("hi", code, "why?"))
    assert not routed(d)
    assert "previous answer" in d.reason
    # A plain everyday answer passes nothing on.
    plain = score_body(chat("hi", "Hello! How can I help you today?", "why?"))
    assert plain.score == pytest.approx(difficulty.score_text("why?"))


def test_inheritance_decays_with_distance():
    turns = [HARD, "..."]
    for _ in range(4):
        turns += [EASY, "..."]
    near = score_body(chat(HARD, "...", EASY)).score
    far = score_body(chat(*turns, EASY)).score
    assert far < near


def test_an_everyday_conversation_adds_nothing():
    # The earlier easy turn scores below the follow-up: the follow-up is judged on its own.
    follow = "a different colour maybe?"
    assert difficulty.score_text(EASY) < difficulty.score_text(follow)
    d = score_body(chat(EASY, "How about a red collar?", follow))
    assert d.score == pytest.approx(difficulty.score_text(follow))
    assert routed(d)


@pytest.mark.parametrize(
    "text",
    [
        "请证明根号2是无理数。",
        "東京の人口はどれくらいですか",
        "이 코드의 버그를 찾아 주세요",
        "ما هو أكبر عدد أولي أقل من 100؟",
        "Привет! Как дела?",
        "¿Cuánto es 15% de 80?",
        "Wie viele Primzahlen gibt es zwischen 1 und 50?",
        "Comment calculer la dérivée de x^x ?",
    ],
)
def test_non_english_is_not_judged(text):
    d = score_body(chat(text))
    assert not d.readable
    assert d.score >= THRESHOLD  # even for a caller that ignores `readable`
    assert d.reason == "non-English text: not judged"


@pytest.mark.parametrize(
    "text",
    [
        "What does 'je ne sais quoi' mean?",
        "Express z-x in y",
        "Create a birthday planning checklist.",
        "calpurnia son name in to kill a mockingbird",
        "def f(x):\n    return x ** 2\n\nWhy is this slow?",
        "2+2=?",
    ],
)
def test_english_code_and_maths_are_readable(text):
    assert score_body(chat(text)).readable


# --- wires, determinism, robustness ------------------------------------------------------------


def test_every_wire_gives_the_same_score():
    expected = score_body(chat(EASY, "Biscuit?", HARD)).score
    bodies = [
        {"model": "gpt-4o", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": EASY}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Biscuit?"}]},
            {"role": "user", "content": [{"type": "input_text", "text": HARD}]},
        ]},
        {"model": "claude-opus-4-1", "system": [{"type": "text", "text": "Be brief."}],
         "messages": [
            {"role": "user", "content": [{"type": "text", "text": EASY}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Biscuit?"}]},
            {"role": "user", "content": [{"type": "text", "text": HARD}]},
        ]},
        {"contents": [
            {"role": "user", "parts": [{"text": EASY}]},
            {"role": "model", "parts": [{"text": "Biscuit?"}]},
            {"role": "user", "parts": [{"text": HARD}]},
        ]},
    ]  # fmt: skip
    for body in bodies:
        assert score_body(body).score == pytest.approx(expected)
    assert score_body({"prompt": HARD}).score == pytest.approx(score_body(chat(HARD)).score)


def test_deterministic_across_reloads():
    bodies = [chat(HARD), chat(EASY), chat(EASY, "x", "why?")]
    first = [score_body(b) for b in bodies]
    difficulty._MODEL = None  # read the weights again
    assert [score_body(b) for b in bodies] == first


def test_scores_in_range_and_never_raise_on_odd_bodies():
    class Hostile(dict):
        def get(self, *args, **kwargs):
            raise RuntimeError("no")

    odd = [
        None,
        [],
        "text",
        {},
        {"messages": None},
        {"messages": "just a string"},
        {"messages": [None, 1, 2.5, [], {"role": 5, "content": {"x": ["y"]}}]},
        {"messages": [{"role": "user", "content": [{"type": ["unhashable"], "text": "hi"}]}]},
        {"messages": [{"role": "user", "content": "x" * 300_000}]},
        {"messages": [{"role": "user", "content": "Prove it. " * 20_000}]},
        {"messages": [{"role": "user", "content": [[["deep"]]] * 10}]},
        {"contents": {"parts": [{"text": "\x00\ud800 weird"}]}},
        {"input": [1, 2, 3]},
        {"prompt": [None, "a", 3]},
        Hostile(messages=[{"role": "user", "content": "hi"}]),
    ]
    rng = random.Random(7)
    alphabet = "ab1 ?!.\n{}$=\u00e9\u4e2d\u0416"
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
        odd.append(
            {"messages": [{"role": rng.choice(["user", "assistant", "x"]), "content": text}]}
        )
    for body in odd:
        d = score_body(body)
        assert 0.0 <= d.score <= 1.0
        assert isinstance(d.readable, bool) and d.reason


def test_weights_are_small_and_threshold_sane():
    assert difficulty.WEIGHTS.stat().st_size < 2_000_000
    assert 0.0 < THRESHOLD < 1.0


def test_conversation_turns_on_every_wire():
    from lcm_jupyter.core.prompt import conversation

    anthropic = {
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "q1"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "content": "42"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "a1"}]},
            {"role": "user", "content": "q2"},
        ],
    }
    assert conversation(anthropic) == (("user", "q1"), ("assistant", "a1"), ("user", "q2"))
    openai = {
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]},
            {"role": "tool", "content": "result"},
            {"role": "user", "content": "q2"},
        ]
    }
    assert conversation(openai) == (("user", "q1"), ("user", "q2"))
    gemini = {
        "contents": [
            {"role": "user", "parts": [{"text": "q"}]},
            {"role": "model", "parts": [{"text": "a"}]},
        ]
    }
    assert conversation(gemini) == (("user", "q"), ("assistant", "a"))
    responses = {
        "instructions": "x",
        "input": [{"type": "reasoning", "summary": []}, {"role": "user", "content": "q"}],
    }
    assert conversation(responses) == (("user", "q"),)
    assert conversation({"input": [[1, 2]]}) == ()
    assert conversation({"prompt": ["a", "bbb"]}) == (("user", "bbb"),)
