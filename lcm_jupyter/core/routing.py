"""Which model a call is forwarded to: each key's routing mode and rules, as a pure decision.

``auto`` sends a request the classifier judges simple one step down a per-provider
ladder of model families (gpt-4o -> gpt-4o-mini), unless the request uses something a
cheaper model may not serve (tools, media, structured output), the target cannot take
it (context, output cap, reasoning/thinking parameters), or users' ratings of that pair
closed the quality gate. ``manual`` applies the key's own rules, first match wins; the
quality gate does not second-guess them. ``off`` forwards the model as sent.

Everything here is synchronous and stdlib-only: it runs on every proxied call. Beyond
the classifier's own time, a decision costs about 10 microseconds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from .budget import max_output_tokens
from .catalog import ModelFacts, default_table, facts_for, ladder
from .classifier import Classification, classify_body
from .detect import provider_for_model
from .difficulty import THRESHOLD, score_body
from .pricing import PriceTable
from .prompt import prompt_view
from .providers import for_wire
from .providers.google import generation_config

__all__ = [
    "DEFAULT_LADDER",
    "DEFAULT_MIN_CONFIDENCE",
    "GENERATION_WIRES",
    "RoutingDecision",
    "apply_route",
    "decide",
    "estimate_prompt_tokens",
    "judge",
    "path_reason",
    "target_serves",
    "unroutable_reason",
]

# Wires that generate text from a prompt; embeddings and passthrough calls are never routed.
GENERATION_WIRES = frozenset(
    {
        "openai.chat",
        "openai.completions",
        "openai.responses",
        "anthropic.messages",
        "google.generate",
        "google.stream",
    }
)
_GOOGLE_WIRES = frozenset({"google.generate", "google.stream"})

DEFAULT_LADDER: Mapping[str, str] = ladder()
"""Catalog model id -> the cheaper sibling a simple request may go to (core/models.json)."""


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """Whether a call was routed, to which model, and why (one line)."""

    mode: str
    was_routed: bool
    from_model: str | None
    to_model: str | None
    intent: str | None
    complexity: str | None
    confidence: float | None
    reason: str
    rule: int | None

    def to_json(self) -> dict[str, Any]:
        """The decision as logged with the call."""
        return {
            "mode": self.mode,
            "intent": self.intent,
            "complexity": self.complexity,
            "confidence": self.confidence,
            "reason": self.reason,
            "was_routed": self.was_routed,
            "rule": self.rule,
            "from_model": self.from_model,
            "to_model": self.to_model,
        }


# --- what a cheaper model may not serve ------------------------------------------------

# Top-level fields that give the model tools: function calling, hosted tools, MCP,
# Anthropic's code-execution container, Gemini's tool config, OpenAI's search models.
_TOOL_KEYS = (
    "tools",
    "functions",
    "tool_choice",
    "function_call",
    "toolConfig",
    "tool_config",
    "mcp_servers",
    "container",
    "web_search_options",
)


def unroutable_reason(wire: str | None, body: Mapping | None) -> str | None:
    """Why a request must keep its model whatever the target, or None if it may be routed."""
    if wire not in GENERATION_WIRES:
        return f"not a generation endpoint ({wire or 'passthrough'})"
    if not isinstance(body, Mapping):
        return "no JSON body"
    try:
        for key in _TOOL_KEYS:
            if body.get(key):
                return f"tools in request ({key})"
        reader = for_wire(wire)
        if wire not in _GOOGLE_WIRES:
            model = body.get("model")
            if not isinstance(model, str) or not model.strip():
                # The path names it (an Azure deployment): there is no body field to change.
                return "model not named in the body"
        return reader.unroutable_reason(wire, body) if reader is not None else None
    except Exception:
        # A malformed body is the provider's to reject; it is not ours to reroute.
        return "malformed request body"


# --- whether a given target can take the request ---------------------------------------

# Parameters an OpenAI reasoning model refuses, with the value that is harmless.
_SAMPLING_DEFAULTS = (
    ("temperature", 1),
    ("top_p", 1),
    ("presence_penalty", 0),
    ("frequency_penalty", 0),
    ("logprobs", False),
    ("top_logprobs", None),
    ("logit_bias", None),
)


def estimate_prompt_tokens(body: Mapping | None) -> int:
    """The classifier's prompt estimate (ceil(characters / 4)) without classifying."""
    return -(-prompt_view(body).total_chars // 4)


def _family(model: str, prices: PriceTable | None) -> str:
    """The price-table family id of a model, else its bare lower-cased name."""
    table = prices if prices is not None else default_table()
    found = table.resolve(model)
    if found is not None:
        return found.model
    name = model.strip().lower()
    return name[len("models/") :] if name.startswith("models/") else name


def _effort(wire: str | None, body: Mapping) -> tuple[bool, Any]:
    """(whether reasoning parameters are present, the effort asked for)."""
    if "reasoning_effort" in body and body["reasoning_effort"] is not None:
        return True, body["reasoning_effort"]
    reasoning = body.get("reasoning") if wire == "openai.responses" else None
    if isinstance(reasoning, Mapping):
        return True, reasoning.get("effort")
    return reasoning is not None, None


def _thinking_problem(to: str, limits: ModelFacts, wire: str | None, body: Mapping) -> str | None:
    """Claude `thinking` or Gemini `thinkingConfig` the target does not support."""
    if wire == "anthropic.messages":
        thinking = body.get("thinking")
        enabled = isinstance(thinking, Mapping) and thinking.get("type") not in (None, "disabled")
        return f"{to} has no extended thinking" if enabled and limits.thinking is None else None
    if wire in _GOOGLE_WIRES:
        config = generation_config(body)
        thinking = config.get("thinkingConfig") or config.get("thinking_config")
        if not isinstance(thinking, Mapping) or not thinking:
            return None
        if limits.thinking is None:
            return f"{to} has no thinking config"
        level = "thinkingLevel" in thinking or "thinking_level" in thinking
        if level and limits.thinking != "level":
            return f"{to} takes no thinkingLevel"
    return None


def target_serves(
    to_model: str,
    body: Mapping | None,
    wire: str | None,
    *,
    prices: PriceTable | None = None,
    prompt_tokens: int | None = None,
) -> str | None:
    """Why `to_model` cannot serve this request, or None (unknown models are not checked)."""
    if not isinstance(body, Mapping):
        return None
    to = _family(to_model, prices)
    limits = facts_for(to)
    if limits is None:
        return None
    try:
        prompt = estimate_prompt_tokens(body) if prompt_tokens is None else prompt_tokens
        output = max_output_tokens(body, 0)
        if output > limits.max_output:
            return f"{to} writes at most {limits.max_output} tokens, {output} asked"
        if prompt + output > limits.context:
            return f"prompt ~{prompt} tokens (+{output} output) exceeds {to}'s {limits.context}"
        asked, effort = _effort(wire, body)
        if asked:
            if not limits.efforts:
                return f"{to} takes no reasoning parameters"
            if effort is not None and effort not in limits.efforts:
                return f"{to} takes no reasoning effort {effort!r}"
        if limits.efforts and not limits.sampling and wire != "anthropic.messages":
            for key, harmless in _SAMPLING_DEFAULTS:
                value = body.get(key)
                if value is not None and value != harmless:
                    return f"reasoning model {to} refuses {key}"
            if wire == "openai.chat" and body.get("max_tokens") is not None:
                return f"reasoning model {to} refuses max_tokens (needs max_completion_tokens)"
        return _thinking_problem(to, limits, wire, body)
    except Exception:
        return "malformed request body"


# --- the decision ------------------------------------------------------------------------

# The provider a wire implies (OpenAI-shaped wires also serve Gemini's compatible API).
_WIRE_PROVIDERS = {
    "anthropic.messages": "anthropic",
    "google.generate": "google",
    "google.stream": "google",
}


def _provider(model: str, prices: PriceTable) -> str | None:
    """The provider serving `model`: the price table's, else its naming scheme's."""
    found = prices.resolve(model)
    return found.provider if found is not None else provider_for_model(model)


def _kept(
    mode: str,
    model: str | None,
    reason: str,
    c: Classification | None = None,
    rule: int | None = None,
) -> RoutingDecision:
    """A decision that forwards the model as sent."""
    return _decision(mode, model, model, reason, c, rule)


def _decision(
    mode: str,
    from_model: str | None,
    to_model: str | None,
    reason: str,
    c: Classification | None,
    rule: int | None,
) -> RoutingDecision:
    """A decision; routed when the forwarded model differs from the one sent."""
    return RoutingDecision(
        mode=mode,
        was_routed=from_model != to_model,
        from_model=from_model,
        to_model=to_model,
        intent=c.intent if c is not None else None,
        complexity=c.complexity if c is not None else None,
        confidence=c.confidence if c is not None else None,
        reason=reason,
        rule=rule,
    )


DEFAULT_MIN_CONFIDENCE = round(1 - THRESHOLD, 4)
"""Routing needs this confidence that the cheaper model suffices (1 - difficulty score)."""


def judge(body: Mapping | None, *, label: bool = True) -> Classification:
    """The learned difficulty of a request as a routing verdict.

    Simple when the text could be judged and its score is under the threshold chosen from
    the evaluation; `confidence` is 1 - score, so a stricter `routing_min_confidence` asks
    for a lower score. With `label`, the keyword classifier names the intent for the logs
    and the dashboards (it no longer decides anything).
    """
    d = score_body(body)
    simple = d.readable and d.score < THRESHOLD
    if label:
        c = classify_body(body)
        intent, prompt = c.intent, c.prompt_tokens
    else:
        intent, prompt = None, estimate_prompt_tokens(body)
    return Classification(
        intent,  # type: ignore[arg-type]
        "simple" if simple else "complex",
        round(1 - d.score, 4),
        d.reason,
        prompt,
    )


def _simple_enough(c: Classification, min_confidence: float) -> str | None:
    """Why a classification does not allow routing, or None."""
    if c.complexity != "simple":
        return f"{c.complexity}: {c.reason}"
    if c.confidence < min_confidence:
        return f"confidence {c.confidence:.2f} < {min_confidence:.2f}: {c.reason}"
    return None


def _auto(
    model: str,
    wire: str | None,
    body: Mapping | None,
    prices: PriceTable,
    ladder: Mapping[str, str],
    min_confidence: float,
    gate: Callable[[str, str], str | None] | None,
    classify: Callable[[Mapping | None], Classification],
) -> RoutingDecision:
    """One step down the ladder for a simple, routable request the target can serve."""
    # Classified even when it cannot be routed: the logged intent feeds the dashboards.
    c = classify(body)
    blocked = unroutable_reason(wire, body)
    if blocked:
        return _kept("auto", model, blocked, c)
    found = prices.resolve(model)
    if found is None:
        return _kept("auto", model, f"unknown model {model}: no cheaper step", c)
    target = ladder.get(found.model)
    if target is None:
        return _kept("auto", model, f"no cheaper step below {found.model}", c)
    why = (
        _simple_enough(c, min_confidence)
        or target_serves(target, body, wire, prices=prices, prompt_tokens=c.prompt_tokens)
        or (gate(found.model, target) if gate is not None else None)
    )
    if why:
        return _kept("auto", model, why, c)
    reason = f"simple ({c.reason}, {c.confidence:.2f}): {found.model} -> {target}"
    return _decision("auto", model, target, reason, c, None)


def _rule_matches(pattern: str, names: tuple[str, ...]) -> bool:
    """Whether a rule's from_model glob matches the model as sent or its family."""
    pattern = pattern.strip().lower()
    return any(fnmatchcase(name, pattern) for name in names)


def _manual(
    model: str,
    wire: str | None,
    body: Mapping | None,
    rules: Sequence[Mapping[str, str]],
    prices: PriceTable,
    min_confidence: float,
    short_prompt_tokens: int,
    classify: Callable[[Mapping | None], Classification],
) -> RoutingDecision:
    """The first rule whose pattern and condition hold, if the request may be routed."""
    found = prices.resolve(model)
    names = (model.lower(), found.model) if found is not None else (model.lower(),)
    matching = [
        (i, rule)
        for i, rule in enumerate(rules)
        if isinstance(rule, Mapping) and _rule_matches(str(rule.get("from_model", "")), names)
    ]
    if not matching:
        return _kept("manual", model, f"no rule matches {model}")
    blocked = unroutable_reason(wire, body)
    if blocked:
        return _kept("manual", model, f"{blocked}: rule {matching[0][0]} not applied")

    source = _provider(model, prices) or _WIRE_PROVIDERS.get(wire or "")
    c: Classification | None = None  # the classifier runs only for a simple-only rule
    prompt: int | None = None
    skipped: list[str] = []
    for i, rule in matching:
        to_model = str(rule.get("to_model", "")).strip()
        condition = rule.get("condition") or "always"
        label = f"rule {i} {rule.get('from_model')} -> {to_model} ({condition})"
        if to_model.lower() == model.lower():
            return _kept("manual", model, f"{label}: keeps the model", c, i)
        target = _provider(to_model, prices)
        # Unknown targets (custom or fine-tuned names) are the user's call.
        if source is not None and target is not None and target != source:
            skipped.append(f"{label}: target is another provider's model ({target})")
            continue
        if condition == "simple-only":
            if c is None:
                c = classify(body)
                prompt = c.prompt_tokens
            why = _simple_enough(c, min_confidence)
            if why:
                skipped.append(f"{label}: {why}")
                continue
            detail = f"simple ({c.intent}, {c.confidence:.2f})"
        elif condition == "short-only":
            if prompt is None:
                prompt = estimate_prompt_tokens(body)
            if prompt >= short_prompt_tokens:
                skipped.append(f"{label}: ~{prompt} tokens >= {short_prompt_tokens}")
                continue
            detail = f"~{prompt} tokens < {short_prompt_tokens}"
        elif condition == "always":
            detail = ""
        else:
            skipped.append(f"{label}: unknown condition")
            continue
        why = target_serves(to_model, body, wire, prices=prices, prompt_tokens=prompt)
        if why:
            skipped.append(f"{label}: {why}")
            continue
        return _decision("manual", model, to_model, f"{label}: {detail}" if detail else label, c, i)
    return _kept("manual", model, "; ".join(skipped), c)


def decide(
    *,
    mode: str,
    model: str | None,
    wire: str | None,
    body: Mapping | None,
    rules: Sequence[Mapping[str, str]],
    prices: PriceTable,
    ladder: Mapping[str, str] = DEFAULT_LADDER,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    short_prompt_tokens: int = 500,
    gate: Callable[[str, str], str | None] | None = None,
    classify: Callable[[Mapping | None], Classification] = judge,
    path: str | None = None,
) -> RoutingDecision:
    """The routing decision for one call under a key's mode and rules.

    `path`, when given, is checked for a model that `apply_route` can replace (an
    Azure deployment path cannot be rerouted by the body).
    """
    if mode not in ("auto", "manual"):
        reason = "routing off" if mode == "off" else f"unknown routing mode {mode!r}"
        return _kept("off", model, reason)
    if not model:
        return _kept(mode, model, "no model in request")
    if wire not in GENERATION_WIRES:
        # Checked before classifying: there is no prompt to judge.
        return _kept(mode, model, unroutable_reason(wire, body) or "not routable")
    if path is not None:
        why = path_reason(wire, path)
        if why:
            return _kept(mode, model, why)
    if mode == "auto":
        return _auto(model, wire, body, prices, ladder, min_confidence, gate, classify)
    return _manual(model, wire, body, rules, prices, min_confidence, short_prompt_tokens, classify)


# --- applying a decision -----------------------------------------------------------------

_DEPLOYMENT_RE = re.compile(r"(?:^|/)deployments/[^/]+/")


def _split_query(path: str) -> tuple[str, str]:
    """(path, "?query" or "")."""
    head, mark, query = path.partition("?")
    return head, mark + query


def _gemini_model_span(path: str) -> tuple[int, int] | None:
    """Start and end of ``{models|tunedModels}/{id}`` before the ``:method`` of a Gemini path."""
    colon = path.rfind(":")
    slash = path.rfind("/", 0, colon)
    if colon < 0 or slash < 0:
        return None
    start = path.rfind("/", 0, slash) + 1
    if path[start:slash] not in ("models", "tunedModels") or slash + 1 == colon:
        return None
    return start, colon


def path_reason(wire: str | None, path: str) -> str | None:
    """Why the model of a call on `path` cannot be replaced, or None."""
    head, _ = _split_query(path)
    if wire in _GOOGLE_WIRES:
        return None if _gemini_model_span(head) else "no model in the path"
    if _DEPLOYMENT_RE.search(head):
        return "the path names an Azure deployment"
    return None


def apply_route(
    wire: str | None, path: str, body: dict | None, to_model: str
) -> tuple[str, dict | None]:
    """The (path, body) that call `to_model` instead; the input body is never mutated.

    Gemini names the model in the path (``v1beta/models/{model}:method``): only that
    segment changes. The other wires carry it in ``body["model"]``. Raises ValueError
    when the path has no model to replace (see `path_reason`).
    """
    why = path_reason(wire, path)
    if why:
        raise ValueError(f"cannot route {path!r}: {why}")
    if wire in _GOOGLE_WIRES:
        head, query = _split_query(path)
        start, end = _gemini_model_span(head)  # type: ignore[misc]
        name = to_model.strip()
        name = name[len("models/") :] if name.startswith("models/") else name
        return f"{head[:start]}models/{name}{head[end:]}{query}", body
    if not isinstance(body, Mapping):
        raise ValueError(f"cannot route {path!r}: no JSON body")
    return path, {**body, "model": to_model}
