"""Evaluation of the difficulty scorer that drives auto routing, the way RouteLLM measures routers.

    python tests/benchmarks/eval_routing.py [--threshold T] [--show N]

Scores every public prompt set with `lcm_jupyter.core.difficulty.score_body` (each prompt sent
as an OpenAI chat body, earlier turns included) and reports:

- on the sets with strong/weak outcomes (MMLU, GSM8K from ../shared/data/routing/, their
  held-out test split, decontaminated): APGR, CPT(50%) and CPT(80%), with the random router
  (averaged over 200 seeds) and the prompt-length router computed in the same run;
- on MT-Bench (tests/data/routing_public/mt_bench.jsonl: GPT-4 judge scores, 1-10, of
  gpt-4-1106-preview and Mixtral-8x7B on both turns of the 80 questions; never trained on, an
  evaluation set only): the same figures computed as RouteLLM's MTBench benchmark does, one
  routing decision per decontaminated question made on its first turn, the outcome of a model
  the mean judge score of its two turns (PGR from mean scores); also, for reference, each turn
  routed as its own call, and the oracle router's figures;
- on the hard sets (GSM8K, HumanEval, a MATH-500 sample, an Arena-Hard sample, MT-Bench
  reasoning/maths/coding turn 1 and turn 2, the project's labelled complex prompts): the share
  routed down at the threshold (score < T and readable), target at most 2%;
- on the everyday sets (self-instruct seeds, NQ-open, Vicuna-bench everyday categories, the
  project's labelled simple prompts): the share routed down (the savings);
- the hand-written probes (tests/data/routing_probes.jsonl), each expected to "keep strong" or
  allowed to route;
- the largest share of prompts on one score value (a cliff), a threshold sweep, and the
  decision time p50/p99 in microseconds.

Only the test split of a set that was partly trained on is measured here (`split_of`); the
evaluation sets under tests/data/routing_public/ and the probes were never trained on (its
MBPP tasks were, and are not measured). Writes tests/benchmarks/results/routing_eval.json.

The keyword classifier's helpers (`load`, `chat_body`, `routed`, `metrics`) stay at the end:
tests/test_classifier.py measures the classifier with them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lcm_jupyter.core import difficulty  # noqa: E402
from lcm_jupyter.core.classifier import INTENTS, Classification  # noqa: E402

SHARED = ROOT.parent / "shared/data/routing"
PUBLIC = ROOT / "tests/data/routing_public"
PROJECT = ROOT / "tests/data/routing_eval.jsonl"
PROBES = ROOT / "tests/data/routing_probes.jsonl"
OUT = ROOT / "tests/benchmarks/results/routing_eval.json"
HARD_TARGET = 0.02
EASY_TARGET = 0.15
RANDOM_SEEDS = 200
TIMING_ROUNDS = 5

Item = dict[str, Any]


# --- data ------------------------------------------------------------------------------------


def split_of(key: str, val: int = 1, train: int = 6) -> str:
    """A stable split by a CRC of the key: train (60%), val (10%) or test (30%) by default."""
    bucket = zlib.crc32(key.encode("utf-8")) % 10
    if bucket < train:
        return "train"
    return "val" if bucket < train + val else "test"


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file (an absent file reads as empty)."""
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def chat(*turns: str) -> list[dict[str, str]]:
    """Alternating user/assistant messages, user first (assistant text left as a stand-in)."""
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)
    ]


def _item(dataset: str, key: str, messages: list, **extra: Any) -> Item:
    return {"dataset": dataset, "id": key, "messages": messages, **extra}


def load_shared() -> list[Item]:
    """The shared public sets, each item tagged with its split."""
    items: list[Item] = []
    for name in ("mmlu", "gsm8k"):
        for row in _jsonl(SHARED / f"{name}.jsonl"):
            meta = row["meta"]
            items.append(
                _item(
                    name,
                    row["id"],
                    row["messages"],
                    strong=float(meta["strong_ok"]),
                    weak=float(meta["weak_ok"]),
                    contaminated=bool(meta.get("contaminated")),
                    subject=meta.get("subject"),
                    split=split_of(row["id"]),
                    kind="hard" if name == "gsm8k" else "mixed",
                )
            )
    for row in _jsonl(SHARED / "humaneval.jsonl"):
        task = row["id"].removesuffix("/raw")  # both forms of a task in the same split
        items.append(
            _item(row["dataset"], row["id"], row["messages"], split=split_of(task), kind="hard")
        )
    for row in _jsonl(SHARED / "seed.jsonl"):
        # Seeds: half trained on (self-instruct's seed tasks are Apache-2.0), the rest measured.
        split = split_of(row["id"], val=1, train=5)
        items.append(_item(row["dataset"], row["id"], row["messages"], split=split, kind="easy"))
    for row in _jsonl(SHARED / "nq_open.jsonl"):
        # CC BY-SA: evaluation only, never trained on.
        items.append(_item(row["dataset"], row["id"], row["messages"], split="eval", kind="easy"))
    return items


_MT_HARD = frozenset({"reasoning", "math", "coding"})
_VICUNA_EASY = frozenset(
    {"generic", "knowledge", "roleplay", "common-sense", "counterfactual", "writing"}
)


def load_public() -> list[Item]:
    """The sets fetched into tests/data/routing_public/ (evaluation only)."""
    items: list[Item] = []
    for row in _jsonl(PUBLIC / "mt_bench.jsonl"):
        # One row per (question, turn); turn 2 carries both user turns (the answers differ by
        # model and are not in the data). Outcomes: the judge scores of either model.
        meta = row["meta"]
        cat, turn = meta["category"], meta["turn"]
        items.append(
            _item(
                f"mt_bench_{cat}_t{turn}",
                row["id"],
                row["messages"],
                kind="hard" if cat in _MT_HARD else "mixed",
                question=row["id"].rsplit("/", 1)[0],
                turn=turn,
                category=cat,
                strong=float(meta["strong_score"]),
                weak=float(meta["weak_score"]),
                contaminated=bool(meta["contaminated"]),
            )
        )
    for row in _jsonl(PUBLIC / "vicuna_bench.jsonl"):
        cat = row["category"]
        kind = "easy" if cat in _VICUNA_EASY else "mixed"
        name = "vicuna_everyday" if kind == "easy" else f"vicuna_{cat}"
        items.append(_item(name, f"vicuna/{row['question_id']}", chat(*row["turns"]), kind=kind))
    for row in _jsonl(PUBLIC / "arena_hard.jsonl"):
        text = row["turns"][0]["content"]
        items.append(_item("arena_hard", row["question_id"], chat(text), kind="hard"))
    for row in _jsonl(PUBLIC / "math500.jsonl"):
        items.append(_item("math500", row["unique_id"], chat(row["problem"]), kind="hard"))
    for row in _jsonl(PROJECT):
        messages: list[dict[str, str]] = []
        if row.get("system"):
            messages.append({"role": "system", "content": row["system"]})
        messages.extend(row.get("history") or ())
        messages.append({"role": "user", "content": row["prompt"]})
        kind = "hard" if row["label"] == "complex" else "easy"
        split = "train" if row.get("split") != "holdout" else "test"
        name = f"project_{'complex' if kind == 'hard' else 'simple'}"
        items.append(
            _item(
                name,
                f"project/{len(items)}",
                messages,
                kind=kind,
                split=split,
                intent=row["intent"],
            )
        )
    return items


def load_probes() -> list[Item]:
    """The hand-written probes: each expects "keep strong" or "may route"."""
    items = []
    for i, row in enumerate(_jsonl(PROBES)):
        messages = row.get("messages") or chat(row["prompt"])
        extra = {k: v for k, v in row.items() if k not in ("messages", "prompt")}
        items.append(_item("probes", f"probe/{i}", messages, **extra))
    return items


def body(item: Item) -> dict[str, Any]:
    """An OpenAI chat body for the item."""
    return {"model": "gpt-4o", "messages": item["messages"]}


def prompt_chars(item: Item) -> int:
    """The prompt-length router's score: characters of every message."""
    return sum(len(m["content"]) for m in item["messages"] if isinstance(m.get("content"), str))


# --- RouteLLM's measures ---------------------------------------------------------------------


def curve(scores: Sequence[float], strong: Sequence[float], weak: Sequence[float]):
    """(c, PGR) points of a router: the prompts with the highest scores go to the strong model.

    Tied scores move together (one threshold), so a router cannot gain from the order of ties.
    """
    n = len(scores)
    r_strong, r_weak = sum(strong) / n, sum(weak) / n
    span = (r_strong - r_weak) or 1e-12
    order = sorted(range(n), key=lambda i: -scores[i])
    points = [(0.0, 0.0)]
    total = sum(weak)
    i = 0
    while i < n:
        j = i
        while j < n and scores[order[j]] == scores[order[i]]:
            total += strong[order[j]] - weak[order[j]]
            j += 1
        points.append((j / n, (total / n - r_weak) / span))
        i = j
    return points


def apgr(points: Sequence[tuple[float, float]]) -> float:
    """Area under the PGR curve over the strong-call share (trapezoid)."""
    return sum((c1 - c0) * (p0 + p1) / 2 for (c0, p0), (c1, p1) in itertools.pairwise(points))


def cpt(points: Sequence[tuple[float, float]], target: float) -> float:
    """Smallest strong-call share at which PGR reaches the target (interpolated)."""
    for (c0, p0), (c1, p1) in itertools.pairwise(points):
        if p1 >= target:
            if p1 == p0 or p0 >= target:
                return c0 if p0 >= target else c1
            return c0 + (c1 - c0) * (target - p0) / (p1 - p0)
    return 1.0


def router_figures(scores: Sequence[float], strong: Sequence[float], weak: Sequence[float]):
    """APGR, CPT(50%) and CPT(80%) of one router on one set."""
    points = curve(scores, strong, weak)
    return {
        "apgr": round(apgr(points), 4),
        "cpt50": round(cpt(points, 0.5), 4),
        "cpt80": round(cpt(points, 0.8), 4),
    }


def random_figures(strong: Sequence[float], weak: Sequence[float], seeds: int = RANDOM_SEEDS):
    """The random router, averaged over seeds."""
    runs = []
    for seed in range(seeds):
        rng = random.Random(seed)
        runs.append(router_figures([rng.random() for _ in strong], strong, weak))
    return {key: round(statistics.fmean(r[key] for r in runs), 4) for key in runs[0]}


# --- evaluation ------------------------------------------------------------------------------


def scored(items: list[Item]) -> list[tuple[Item, difficulty.Difficulty]]:
    """Each item with its difficulty."""
    return [(item, difficulty.score_body(body(item))) for item in items]


def routed_down(d: difficulty.Difficulty, threshold: float) -> bool:
    """Whether auto routing would move this call down."""
    return d.readable and d.score < threshold


def outcome_sets(rows: list[tuple[Item, difficulty.Difficulty]]) -> dict[str, Any]:
    """APGR/CPT of the scorer and both baselines on each outcome set's test split."""
    out: dict[str, Any] = {}
    for name in ("mmlu", "gsm8k"):
        part = [
            (i, d)
            for i, d in rows
            if i["dataset"] == name and i["split"] == "test" and not i["contaminated"]
        ]
        strong = [i["strong"] for i, _ in part]
        weak = [i["weak"] for i, _ in part]
        out[name] = {
            "n": len(part),
            "strong_acc": round(statistics.fmean(strong), 4),
            "weak_acc": round(statistics.fmean(weak), 4),
            "scorer": router_figures([d.score for _, d in part], strong, weak),
            "random": random_figures(strong, weak),
            "length": router_figures([float(prompt_chars(i)) for i, _ in part], strong, weak),
        }
    return out


def mt_bench_outcomes(
    rows: list[tuple[Item, difficulty.Difficulty]], threshold: float
) -> dict[str, Any]:
    """MT-Bench APGR/CPT as RouteLLM computes them, and the hard categories routed down.

    RouteLLM's MTBench benchmark drops a question when either turn is a contaminated prompt,
    routes each question once, on its first turn ("Only use first turn for routing"), and
    scores a routing by the mean GPT-4 judge score (1-10) over both turns of the model each
    question went to: the outcome of a question is the mean of its two turn scores. For
    reference, "per_turn" routes each turn as its own call (its conversation so far) against
    that turn's scores, which is how auto routing meets a multi-turn chat; "oracle" is the
    best a router could do (questions ordered by the strong model's gain).
    """
    by_question: dict[str, dict[int, tuple[Item, difficulty.Difficulty]]] = {}
    for item, d in rows:
        if item["dataset"].startswith("mt_bench_"):
            by_question.setdefault(item["question"], {})[item["turn"]] = (item, d)
    clean = [q for q, t in sorted(by_question.items()) if not t[1][0]["contaminated"]]
    first = [by_question[q][1] for q in clean]
    strong = [statistics.fmean(by_question[q][t][0]["strong"] for t in (1, 2)) for q in clean]
    weak = [statistics.fmean(by_question[q][t][0]["weak"] for t in (1, 2)) for q in clean]
    turns = [by_question[q][t] for q in clean for t in (1, 2)]
    t_strong = [i["strong"] for i, _ in turns]
    t_weak = [i["weak"] for i, _ in turns]
    hard = [(i, d) for t in by_question.values() for i, d in t.values() if i["kind"] == "hard"]
    down = [i for i, d in hard if routed_down(d, threshold)]
    return {
        "n_questions": len(clean),
        "strong_mean": round(statistics.fmean(strong), 4),
        "weak_mean": round(statistics.fmean(weak), 4),
        "routellm": {
            "scorer": router_figures([d.score for _, d in first], strong, weak),
            "random": random_figures(strong, weak),
            "length": router_figures([float(prompt_chars(i)) for i, _ in first], strong, weak),
            "oracle": router_figures(
                [s - w for s, w in zip(strong, weak, strict=True)], strong, weak
            ),
        },
        "per_turn": {
            "n": len(turns),
            "scorer": router_figures([d.score for _, d in turns], t_strong, t_weak),
            "random": random_figures(t_strong, t_weak),
            "length": router_figures([float(prompt_chars(i)) for i, _ in turns], t_strong, t_weak),
            "oracle": router_figures(
                [s - w for s, w in zip(t_strong, t_weak, strict=True)], t_strong, t_weak
            ),
        },
        # Every question of the reasoning, math and coding categories, both turns (RouteLLM's
        # contamination concerns its own routers' training data, not this scorer).
        "hard_categories": {
            "n": len(hard),
            "routed_down": len(down),
            "share": round(len(down) / len(hard), 4) if hard else None,
            "routed_ids": sorted(i["id"] for i in down),
        },
    }


def _measured(item: Item) -> bool:
    """Whether the item counts in the evaluation (not a training or validation row)."""
    return item.get("split", "eval") in ("test", "eval")


def shares(rows: list[tuple[Item, difficulty.Difficulty]], kind: str, threshold: float):
    """Per set of one kind: n, share routed down, and the routed prompts."""
    sets: dict[str, list] = {}
    for item, d in rows:
        if item.get("kind") == kind and _measured(item):
            sets.setdefault(item["dataset"], []).append((item, d))
    out = {}
    for name, part in sorted(sets.items()):
        down = [(i, d) for i, d in part if routed_down(d, threshold)]
        out[name] = {
            "n": len(part),
            "routed_down": len(down),
            "share": round(len(down) / len(part), 4),
            "not_judged": sum(not d.readable for _, d in part),
            "examples": [
                {"prompt": i["messages"][-1]["content"][:120], "score": round(d.score, 3)}
                for i, d in sorted(down, key=lambda x: x[1].score)[:5]
            ],
        }
    return out


def probe_results(rows: list[tuple[Item, difficulty.Difficulty]], threshold: float):
    """Each probe's outcome against its expectation."""
    out = []
    for item, d in rows:
        down = routed_down(d, threshold)
        expect = item["expect"]
        ok = (not down) if expect == "keep strong" else True
        out.append(
            {
                "group": item["group"],
                "expect": expect,
                "routed_down": down,
                "ok": ok,
                "score": round(d.score, 3),
                "readable": d.readable,
                "reason": d.reason,
                "prompt": item["messages"][-1]["content"][:80],
            }
        )
    return out


def timing(items: list[Item]) -> dict[str, float]:
    """Decision time of score_body in microseconds over the items (after a warm-up).

    Reports the percentiles over all calls and, steadier on a shared machine, the median over
    the rounds of each round's percentiles.
    """
    bodies = [body(i) for i in items]
    for b in bodies:
        difficulty.score_body(b)
    rounds: list[list[float]] = []
    clock = time.perf_counter_ns
    for _ in range(TIMING_ROUNDS):
        samples = []
        for b in bodies:
            t0 = clock()
            difficulty.score_body(b)
            samples.append((clock() - t0) / 1000)
        rounds.append(sorted(samples))

    def pct(samples: list[float], q: float) -> float:
        return round(samples[min(len(samples) - 1, int(q * len(samples)))], 1)

    every = sorted(x for r in rounds for x in r)
    return {
        "calls": len(every),
        "p50_us": pct(every, 0.5),
        "p99_us": pct(every, 0.99),
        "max_us": pct(every, 1.0),
        "round_median_p50_us": round(statistics.median(pct(r, 0.5) for r in rounds), 1),
        "round_median_p99_us": round(statistics.median(pct(r, 0.99) for r in rounds), 1),
    }


def threshold_sweep(rows, thresholds: Sequence[float]) -> list[dict[str, Any]]:
    """Worst hard-set share and mean everyday share routed down at several thresholds."""
    out = []
    for t in thresholds:
        hard = shares(rows, "hard", t)
        easy = shares(rows, "easy", t)
        out.append(
            {
                "threshold": t,
                "worst_hard": max(v["share"] for v in hard.values()),
                "easy_mean": round(statistics.fmean(v["share"] for v in easy.values()), 4),
                "vicuna_everyday": easy.get("vicuna_everyday", {}).get("share"),
            }
        )
    return out


# --- the keyword classifier's figures (tests/test_classifier.py measures it with these) --------


def load(path: Path = PROJECT) -> list[dict[str, Any]]:
    """The labelled items, one JSON object per line."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def chat_body(item: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat body carrying the item's system prompt, history and prompt."""
    messages: list[dict[str, Any]] = []
    if item.get("system"):
        messages.append({"role": "system", "content": item["system"]})
    messages.extend(item.get("history") or ())
    messages.append({"role": "user", "content": item["prompt"]})
    return {"model": "gpt-4o", "messages": messages}


def routed(c: Classification, threshold: float) -> bool:
    """Whether auto routing would move this call down."""
    return c.complexity == "simple" and c.confidence >= threshold


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def metrics(rows: list[tuple[dict, Classification]], threshold: float) -> dict[str, Any]:
    """Every figure for one part of the set."""
    n = len(rows)
    confusion = Counter((item["label"], c.complexity) for item, c in rows)
    flags = [(item, c, routed(c, threshold)) for item, c in rows]
    n_routed = sum(r for _, _, r in flags)
    complex_total = sum(1 for item, _ in rows if item["label"] == "complex")
    simple_total = n - complex_total
    costly = sum(1 for item, _, r in flags if r and item["label"] == "complex")
    correct = confusion["simple", "simple"] + confusion["complex", "complex"]
    per_intent: dict[str, Any] = {}
    for intent in INTENTS:
        sub = [(item, c, r) for item, c, r in flags if item["intent"] == intent]
        if not sub:
            continue
        per_intent[intent] = {
            "n": len(sub),
            "simple": sum(1 for item, _, _ in sub if item["label"] == "simple"),
            "complexity_accuracy": _ratio(
                sum(1 for item, c, _ in sub if c.complexity == item["label"]), len(sub)
            ),
            "intent_recall": _ratio(sum(1 for _, c, _ in sub if c.intent == intent), len(sub)),
            "routed": sum(r for _, _, r in sub),
            "complex_routed": sum(1 for item, _, r in sub if r and item["label"] == "complex"),
        }
    calibration = []
    for low, high in ((0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01)):
        sub = [(item, c) for item, c in rows if low <= c.confidence < high]
        right = sum(1 for item, c in sub if c.complexity == item["label"])
        calibration.append(
            {
                "confidence": f"{low:.1f}-{min(high, 1.0):.1f}",
                "n": len(sub),
                "accuracy": _ratio(right, len(sub)),
            }
        )
    # What the router relies on: of the calls judged simple at a given confidence, the share
    # truly simple.
    simple_calibration = []
    for low, high in ((0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01)):
        sub = [item for item, c in rows if c.complexity == "simple" and low <= c.confidence < high]
        right = sum(1 for item in sub if item["label"] == "simple")
        simple_calibration.append(
            {
                "confidence": f"{low:.1f}-{min(high, 1.0):.1f}",
                "n": len(sub),
                "truly_simple": _ratio(right, len(sub)),
            }
        )
    sweep = []
    for t in (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9):
        hits = [item for item, c in rows if routed(c, t)]
        bad = sum(1 for item in hits if item["label"] == "complex")
        sweep.append(
            {
                "threshold": t,
                "routed_share": _ratio(len(hits), n),
                "complex_routed_rate": _ratio(bad, complex_total),
            }
        )
    return {
        "n": n,
        "simple_share": _ratio(simple_total, n),
        "complexity_accuracy": _ratio(correct, n),
        "confusion": {
            "simple_as_simple": confusion["simple", "simple"],
            "simple_as_complex": confusion["simple", "complex"],
            "complex_as_simple": confusion["complex", "simple"],
            "complex_as_complex": confusion["complex", "complex"],
        },
        "routed_share": _ratio(n_routed, n),
        "simple_routed_share": _ratio(n_routed - costly, simple_total),
        "complex_routed_rate": _ratio(costly, complex_total),
        "complex_routed": costly,
        "routing_precision": _ratio(n_routed - costly, n_routed),
        "intent_accuracy": _ratio(sum(1 for item, c in rows if c.intent == item["intent"]), n),
        "per_intent": per_intent,
        "calibration": calibration,
        "simple_calibration": simple_calibration,
        "threshold_sweep": sweep,
    }


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=difficulty.THRESHOLD)
    parser.add_argument("--show", type=int, default=0, help="routed hard prompts to list per set")
    args = parser.parse_args(argv)
    t = args.threshold

    items = load_shared() + load_public()
    probes = load_probes()
    rows = scored(items)
    probe_rows = scored(probes)
    results: dict[str, Any] = {"threshold": t, "weights_bytes": difficulty.WEIGHTS.stat().st_size}

    print(f"== Outcome sets (test split, decontaminated); threshold {t}")
    results["outcomes"] = outcomes = outcome_sets(rows)
    print(f"{'set':8} {'n':>5}  {'router':8} {'APGR':>6} {'CPT50':>7} {'CPT80':>7}")
    for name, o in outcomes.items():
        for router in ("scorer", "random", "length"):
            f = o[router]
            print(
                f"{name:8} {o['n']:5d}  {router:8} {f['apgr']:6.3f}"
                f" {_pct(f['cpt50'])} {_pct(f['cpt80'])}"
            )

    results["mt_bench"] = mt = mt_bench_outcomes(rows, t)
    print(
        f"\n== MT-Bench ({mt['n_questions']} questions, decontaminated; GPT-4 judge, mean score"
        f" strong {mt['strong_mean']:.2f} / weak {mt['weak_mean']:.2f})"
    )
    print(f"{'routing':28} {'router':8} {'APGR':>6} {'CPT50':>7} {'CPT80':>7}")
    ways = (
        ("RouteLLM: question, turn 1", mt["routellm"]),
        ("each turn its own call", mt["per_turn"]),
    )
    for way, figures in ways:
        for router in ("scorer", "random", "length", "oracle"):
            f = figures[router]
            print(f"{way:28} {router:8} {f['apgr']:6.3f} {_pct(f['cpt50'])} {_pct(f['cpt80'])}")
    hc = mt["hard_categories"]
    print(
        f"reasoning/math/coding, both turns, routed down at {t}:"
        f" {hc['routed_down']}/{hc['n']} {_pct(hc['share'] or 0.0)}"
    )

    results["hard"] = hard = shares(rows, "hard", t)
    print(f"\n== Hard sets: share routed down at {t} (target <= {HARD_TARGET:.0%})")
    for name, h in hard.items():
        verdict = "ok" if h["share"] <= HARD_TARGET else "MISS"
        print(
            f"{name:28} n={h['n']:5d} routed down {h['routed_down']:4d}"
            f" {_pct(h['share'])} {verdict}"
        )
        for ex in h["examples"][: args.show]:
            print(f"    {ex['score']:.3f} {ex['prompt']!r}")

    results["easy"] = easy = shares(rows, "easy", t)
    print(f"\n== Everyday sets: share routed down at {t} (the savings)")
    for name, e in easy.items():
        print(f"{name:28} n={e['n']:5d} routed down {e['routed_down']:4d} {_pct(e['share'])}")
    results["mixed"] = mixed = shares(rows, "mixed", t)
    print("\n== Mixed sets (no verdict): share routed down")
    for name, m in mixed.items():
        print(f"{name:28} n={m['n']:5d} routed down {m['routed_down']:4d} {_pct(m['share'])}")

    results["probes"] = probes_out = probe_results(probe_rows, t)
    print("\n== Probes")
    groups: dict[str, list] = {}
    for p in probes_out:
        groups.setdefault(p["group"], []).append(p)
    for group, ps in groups.items():
        keep = [p for p in ps if p["expect"] == "keep strong"]
        may = [p for p in ps if p["expect"] != "keep strong"]
        kept = sum(not p["routed_down"] for p in keep)
        routed_may = sum(p["routed_down"] for p in may)
        print(
            f"{group:22} keep strong: {kept}/{len(keep)} kept;"
            f" may route: {routed_may}/{len(may)} routed"
        )
        for p in ps:
            if not p["ok"]:
                print(f"    FAIL {p['score']:.3f} {p['prompt']!r} -- {p['reason']}")

    # A cliff: many prompts on exactly one score (the keyword classifier had 19% on one value).
    values = Counter(round(d.score, 6) for _, d in rows + probe_rows)
    results["largest_tie_share"] = tie = round(
        values.most_common(1)[0][1] / sum(values.values()), 5
    )
    print(f"\n== Largest share of prompts on one score value: {tie:.3%}")

    results["sweep"] = sweep = threshold_sweep(rows, (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4))
    print("\n== Threshold sweep: worst hard-set share / mean everyday share / Vicuna everyday")
    for s in sweep:
        print(
            f"  {s['threshold']:.2f}: {_pct(s['worst_hard'])} / {_pct(s['easy_mean'])}"
            f" / {_pct(s['vicuna_everyday'] or 0.0)}"
        )

    timed = [i for i in items if i["dataset"] not in ("mmlu", "nq_open", "nq_open_cased")]
    timed += [i for i in items if i["dataset"] == "mmlu"][:1500]
    timed += [i for i in items if i["dataset"] == "nq_open"][:500] + probes
    results["timing"] = tm = timing(timed)
    print(
        f"\n== Decision time over {tm['calls']} calls: p50 {tm['p50_us']} us,"
        f" p99 {tm['p99_us']} us, max {tm['max_us']} us (median of {TIMING_ROUNDS} rounds:"
        f" p50 {tm['round_median_p50_us']} us, p99 {tm['round_median_p99_us']} us)"
    )
    print(f"weights file: {results['weights_bytes']:,} bytes")

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
