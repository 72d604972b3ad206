"""Evaluation of the request classifier on the labelled routing set.

    python tests/benchmarks/eval_routing.py [--threshold 0.7] [--split tune|holdout|all]
                                            [--show-errors]

Loads tests/data/routing_eval.jsonl, builds an OpenAI chat body from each item (system
prompt and earlier turns included), runs `classify_body` on it and prints, for the tune
part, the holdout part and the whole set: complexity accuracy, the simple/complex
confusion matrix, the share of calls auto routing WOULD move down (simple with
confidence >= threshold), the share of complex prompts that would be routed down (the
costly mistake; target under 3%), the precision of routing, intent accuracy, a
per-intent breakdown, a calibration table and the classification time p50/p99 in
microseconds. Then lists the misrouted complex prompts so that a developer can improve
the rules. Writes tests/benchmarks/results/routing_eval.json.

`--split` restricts the printed prompt lists to one part: tune the rules with
`--split tune` so the holdout prompts stay unseen.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lcm_jupyter.core.classifier import INTENTS, Classification, classify, classify_body  # noqa: E402
from lcm_jupyter.core.prompt import prompt_view  # noqa: E402

DATA = ROOT / "tests/data/routing_eval.jsonl"
OUT = ROOT / "tests/benchmarks/results/routing_eval.json"
COSTLY_TARGET = 0.03
TIMING_ROUNDS = 20  # every item is timed this many times: p99 over ~5,500 calls


def load(path: Path = DATA) -> list[dict[str, Any]]:
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


def timing(items: list[dict[str, Any]]) -> dict[str, float]:
    """p50/p99 in microseconds of classify_body, and of its two halves, over the set."""
    bodies = [chat_body(item) for item in items]
    for body in bodies:  # warm-up
        classify_body(body)
    whole: list[float] = []
    view_part: list[float] = []
    rules_part: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(TIMING_ROUNDS):
        for body in bodies:
            t0 = clock()
            view = prompt_view(body)
            t1 = clock()
            classify(view)
            t2 = clock()
            classify_body(body)
            t3 = clock()
            view_part.append((t1 - t0) / 1000)
            rules_part.append((t2 - t1) / 1000)
            whole.append((t3 - t2) / 1000)

    def pct(samples: list[float], q: float) -> float:
        ordered = sorted(samples)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {
        "calls": len(whole),
        "p50_us": round(statistics.median(whole), 1),
        "p99_us": pct(whole, 0.99),
        "max_us": round(max(whole), 1),
        "prompt_view_p50_us": round(statistics.median(view_part), 1),
        "prompt_view_p99_us": pct(view_part, 0.99),
        "classify_p50_us": round(statistics.median(rules_part), 1),
        "classify_p99_us": pct(rules_part, 0.99),
    }


def _pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{100 * value:5.1f}%"


def report(name: str, m: dict[str, Any], threshold: float) -> None:
    """Print one part's figures."""
    c = m["confusion"]
    rate = m["complex_routed_rate"]
    verdict = "PASS" if rate is not None and rate < COSTLY_TARGET else "MISS"
    lines = [
        f"\n== {name}: {m['n']} prompts ({_pct(m['simple_share']).strip()} labelled simple)",
        f"complexity accuracy          {_pct(m['complexity_accuracy'])}",
        "confusion (label -> predicted) simple  complex",
        f"  simple                       {c['simple_as_simple']:6d}  {c['simple_as_complex']:7d}",
        f"  complex                      {c['complex_as_simple']:6d}  {c['complex_as_complex']:7d}",
        f"routed share @{threshold:.2f}           {_pct(m['routed_share'])}"
        f"   (of simple prompts: {_pct(m['simple_routed_share']).strip()})",
        f"complex routed down          {_pct(rate)}   ({m['complex_routed']} prompts;"
        f" target < {COSTLY_TARGET:.0%}: {verdict})",
        f"routing precision            {_pct(m['routing_precision'])}",
        f"intent accuracy              {_pct(m['intent_accuracy'])}",
        f"  {'intent':10} {'n':>4} {'simple':>6} {'cplx acc':>8} {'intent rec':>10}"
        f" {'routed':>6} {'cplx routed':>11}",
    ]
    for intent, row in m["per_intent"].items():
        lines.append(
            f"  {intent:10} {row['n']:4d} {row['simple']:6d} {_pct(row['complexity_accuracy']):>8}"
            f" {_pct(row['intent_recall']):>10} {row['routed']:6d} {row['complex_routed']:11d}"
        )
    bins = (
        f"{b['confidence']} n={b['n']} acc={_pct(b['accuracy']).strip()}" for b in m["calibration"]
    )
    lines.append("  calibration (all verdicts): " + ", ".join(bins))
    bins = (
        f"{b['confidence']} n={b['n']} simple={_pct(b['truly_simple']).strip()}"
        for b in m["simple_calibration"]
    )
    lines.append("  calibration (simple verdicts): " + ", ".join(bins))
    steps = (
        f"{s['threshold']:.2f}: {_pct(s['routed_share']).strip()}"
        f"/{_pct(s['complex_routed_rate']).strip()}"
        for s in m["threshold_sweep"]
    )
    lines.append("  threshold -> routed/complex routed: " + ", ".join(steps))
    print("\n".join(lines))


def _show(title: str, rows: list[tuple[dict, Classification]], width: int) -> None:
    print(f"\n{title}: {len(rows)}")
    for item, c in rows:
        tag = f"{c.intent}/{item['intent']} {c.confidence:.2f}"
        print(f"  [{tag}] {item['prompt'][:width]!r} -- {c.reason}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument(
        "--split",
        choices=("tune", "holdout", "all"),
        default="all",
        help="part whose misclassified prompts are listed",
    )
    parser.add_argument(
        "--show-errors",
        action="store_true",
        help="also list the other complexity errors and the intent errors",
    )
    args = parser.parse_args()
    threshold = args.threshold

    items = load()
    rows = [(item, classify_body(chat_body(item))) for item in items]
    parts = {
        "tune": [r for r in rows if r[0].get("split") != "holdout"],
        "holdout": [r for r in rows if r[0].get("split") == "holdout"],
        "all": rows,
    }
    results: dict[str, Any] = {"threshold": threshold}
    for name, part in parts.items():
        results[name] = metrics(part, threshold)
        report(name, results[name], threshold)
    results["timing"] = t = timing(items)
    print(
        f"\ntiming over {t['calls']} calls: classify_body p50 {t['p50_us']} us,"
        f" p99 {t['p99_us']} us, max {t['max_us']} us"
        f" (prompt_view p50 {t['prompt_view_p50_us']} / p99 {t['prompt_view_p99_us']} us;"
        f" rules p50 {t['classify_p50_us']} / p99 {t['classify_p99_us']} us)"
    )

    shown = parts[args.split]
    costly = [(i, c) for i, c in shown if i["label"] == "complex" and routed(c, threshold)]
    _show(f"misrouted complex prompts ({args.split}) [predicted/labelled intent]", costly, 60)
    if args.show_errors:
        missed = [
            (i, c)
            for i, c in shown
            if i["label"] == "complex" and c.complexity == "simple" and not routed(c, threshold)
        ]
        _show(f"complex judged simple, not routed ({args.split})", missed, 70)
        wasted = [(i, c) for i, c in shown if i["label"] == "simple" and c.complexity == "complex"]
        _show(f"simple judged complex ({args.split})", wasted, 70)
        wrong = [(i, c) for i, c in shown if i["intent"] != c.intent]
        _show(f"intent errors ({args.split})", wrong, 70)

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
