"""py-spy over the server during one load run, and a summary of where its time went."""

from __future__ import annotations

import collections
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path


def run_profile(
    pyspy: str,
    pid: int,
    load: Callable[[], dict],
    duration: float,
    out: Path,
    pin: Callable[[], None] | None,
) -> dict:
    """py-spy (blocking sampling: whole stacks, a little slower) while `load()` runs."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [pyspy, "record", "--pid", str(pid), "--duration", str(int(duration) + 1)]
    cmd += ["--rate", "250", "--format", "speedscope", "--threads", "--output", str(out)]
    spy = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=pin
    )
    res = load()
    log, _ = spy.communicate(timeout=60)
    if spy.returncode != 0 or not out.exists():
        return {"wrk": res, "error": log}
    summary = summarize_speedscope(out)
    summary["wrk"] = res
    return summary


def print_profile(summary: dict, duration: float) -> None:
    """The two busiest threads: self time by package and function, inclusive time."""
    if summary.get("error"):
        print(f"py-spy failed:\n{summary['error']}")
        return
    for t in summary["threads"][:2]:
        print(
            f"\n  thread {t['thread']}: {t['samples']} non-idle samples "
            f"({t['sampled_seconds']}s of the {duration:g}s run)"
        )
        for title, rows, n in (
            ("self time by package/module", t["self_by_package"], 12),
            ("self time by function", t["self"], 20),
            ("inclusive time by function", t["inclusive"], 25),
        ):
            print(f"  {title}:")
            for name, pct in rows[:n]:
                print(f"    {pct:5.1f}%  {name}")


def summarize_speedscope(path: Path, top: int = 25) -> dict:
    """Self and inclusive shares of samples per function, per thread, from py-spy's output."""
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]

    def fname(i: int) -> str:
        f = frames[i]
        file = f.get("file") or ""
        short = re.sub(r"^.*/site-packages/", "", file)
        short = re.sub(r"^.*/(lcm_jupyter/)", r"\1", short)
        short = re.sub(r"^.*/lib/python3\.\d+/", "stdlib/", short)
        return f"{f['name']} ({short})"  # per function: py-spy's line is the one running

    threads = []
    for prof in data["profiles"]:
        total = sum(prof["weights"]) or 1  # py-spy weighs samples in seconds
        self_w: collections.Counter = collections.Counter()
        incl_w: collections.Counter = collections.Counter()
        by_file: collections.Counter = collections.Counter()
        for stack, w in zip(prof["samples"], prof["weights"], strict=True):
            if not stack:
                continue
            self_w[fname(stack[-1])] += w
            by_file[_bucket(frames[stack[-1]].get("file") or "")] += w
            for name in {fname(i) for i in stack}:
                incl_w[name] += w

        def shares(counter: collections.Counter, n: int, total: float = total) -> list:
            return [(name, round(100 * w / total, 1)) for name, w in counter.most_common(n)]

        threads.append(
            {
                "thread": prof.get("name"),
                "samples": len(prof["samples"]),
                "sampled_seconds": round(total, 2),
                "self": shares(self_w, top),
                "inclusive": shares(incl_w, top),
                "self_by_package": shares(by_file, 15),
            }
        )
    threads.sort(key=lambda t: -t["samples"])
    return {"file": str(path), "threads": threads}


def _bucket(file: str) -> str:
    m = re.search(r"/site-packages/([^/]+)", file)
    if m:
        return m.group(1).removesuffix(".py")
    m = re.search(r"/(lcm_jupyter/[^/]+(?:/[^/]+)?)", file)
    if m:
        return m.group(1)
    m = re.search(r"/lib/python3\.\d+/([^/]+)", file)
    if m:
        return "stdlib/" + m.group(1).removesuffix(".py")
    return file or "?"
