"""The pure routing decision: modes, ladder, what blocks routing, manual rules, applying it."""

from __future__ import annotations

import pytest

from lcm_jupyter.core.catalog import default_table, facts_for
from lcm_jupyter.core.classifier import Classification, classify_body
from lcm_jupyter.core.quality import QualityBoard
from lcm_jupyter.core.routing import (
    DEFAULT_LADDER,
    DEFAULT_MIN_CONFIDENCE,
    RoutingDecision,
    apply_route,
    decide,
    estimate_prompt_tokens,
    path_reason,
    target_serves,
    unroutable_reason,
)

PRICES = default_table()
SIMPLE = Classification("qa", "simple", 0.9, "short factual question", 12)
COMPLEX = Classification("code", "complex", 0.95, "multi-step code task", 400)
UNSURE = Classification("qa", "simple", 0.5, "ambiguous", 12)


def fixed(c: Classification):
    """A classifier that always answers `c` and counts its calls."""

    def classify(body):
        classify.calls += 1
        return c

    classify.calls = 0
    return classify


def never(body):
    raise AssertionError("the classifier must not run")


def chat(model="gpt-4o", text="What is the capital of France?", **extra):
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def gemini(text="What is the capital of France?", **extra):
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


def auto(model, body, *, wire="openai.chat", classify=None, **kwargs):
    return decide(
        mode="auto",
        model=model,
        wire=wire,
        body=body,
        rules=[],
        prices=PRICES,
        classify=classify or fixed(SIMPLE),
        **kwargs,
    )


def manual(model, body, rules, *, wire="openai.chat", classify=never, **kwargs):
    return decide(
        mode="manual",
        model=model,
        wire=wire,
        body=body,
        rules=rules,
        prices=PRICES,
        classify=classify,
        **kwargs,
    )


def rule(from_model, to_model, condition="always"):
    return {"from_model": from_model, "to_model": to_model, "condition": condition}


# --- off ------------------------------------------------------------------------------


def test_off_never_routes_nor_classifies():
    d = decide(
        mode="off",
        model="gpt-4o",
        wire="openai.chat",
        body=chat(),
        rules=[rule("*", "gpt-4o-mini")],
        prices=PRICES,
        classify=never,
    )
    assert d == RoutingDecision(
        "off", False, "gpt-4o", "gpt-4o", None, None, None, "routing off", None
    )
    assert d.to_json() == {
        "mode": "off",
        "intent": None,
        "complexity": None,
        "confidence": None,
        "reason": "routing off",
        "was_routed": False,
        "rule": None,
        "from_model": "gpt-4o",
        "to_model": "gpt-4o",
    }


def test_an_unknown_mode_acts_as_off():
    d = decide(
        mode="sometimes",
        model="gpt-4o",
        wire="openai.chat",
        body=chat(),
        rules=[],
        prices=PRICES,
        classify=never,
    )
    assert (d.mode, d.was_routed, d.reason) == ("off", False, "unknown routing mode 'sometimes'")


# --- auto -----------------------------------------------------------------------------


def test_auto_routes_a_simple_request_one_step_down():
    classify = fixed(SIMPLE)
    d = auto("gpt-4o", chat(), classify=classify)
    assert d.was_routed and (d.from_model, d.to_model) == ("gpt-4o", "gpt-4o-mini")
    assert (d.mode, d.intent, d.complexity, d.confidence, d.rule) == (
        "auto",
        "qa",
        "simple",
        0.9,
        None,
    )
    assert d.reason == "simple (short factual question, 0.90): gpt-4o -> gpt-4o-mini"
    assert classify.calls == 1
    assert d.to_json()["was_routed"] is True


def test_auto_keeps_complex_requests():
    d = auto("gpt-4o", chat(), classify=fixed(COMPLEX))
    assert not d.was_routed and d.to_model == "gpt-4o"
    assert d.reason == "complex: multi-step code task"
    assert (d.intent, d.complexity, d.confidence) == ("code", "complex", 0.95)


def test_auto_keeps_simple_requests_below_the_confidence_floor():
    d = auto("gpt-4o", chat(), classify=fixed(UNSURE))
    assert not d.was_routed and d.reason == "confidence 0.50 < 0.75: ambiguous"
    assert auto("gpt-4o", chat(), classify=fixed(UNSURE), min_confidence=0.5).was_routed


@pytest.mark.parametrize(
    ("model", "target"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1-mini"),
        ("gpt-5-2025-08-07", "gpt-5-mini"),
        ("claude-sonnet-4-20250514", "claude-haiku-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-haiku-4-5"),
        ("claude-3-7-sonnet-latest", "claude-3-5-haiku-latest"),
        ("gemini-2.5-pro-preview-05-06", "gemini-2.5-flash"),
        ("gemini-1.5-pro-002", "gemini-1.5-flash"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash-lite"),
    ],
)
def test_dated_versions_route_by_their_family(model, target):
    wire = "google.generate" if "gemini" in model else "openai.chat"
    body = gemini() if wire == "google.generate" else chat(model)
    if model.startswith("claude"):
        wire, body = "anthropic.messages", {**chat(model), "max_tokens": 100}
    d = auto(model, body, wire=wire)
    assert d.was_routed, d.reason
    assert (d.from_model, d.to_model) == (model, target)


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("gpt-4o-mini", "no cheaper step below gpt-4o-mini"),
        ("gpt-5-nano", "no cheaper step below gpt-5-nano"),
        ("claude-haiku-4-5", "no cheaper step below claude-haiku-4-5"),
        ("my-finetune", "unknown model my-finetune: no cheaper step"),
        ("gpt-4o-realtime-preview", "no cheaper step below gpt-4o-realtime-preview"),
        ("my-own-model", "unknown model my-own-model: no cheaper step"),
    ],
)
def test_auto_keeps_models_without_a_ladder_step(model, reason):
    d = auto(model, chat(model))
    assert not d.was_routed and d.reason == reason
    assert d.intent == "qa"  # still classified: the log shows what was asked


def test_a_custom_ladder_replaces_the_default():
    d = auto("gpt-4o", chat(), ladder={"gpt-4o": "gpt-4.1-nano"})
    assert d.to_model == "gpt-4.1-nano"
    assert not auto("gpt-4o", chat(), ladder={}).was_routed


def test_no_model_is_not_routed():
    d = auto(None, {"messages": []}, classify=never)
    assert not d.was_routed and d.reason == "no model in request" and d.to_model is None


@pytest.mark.parametrize(
    ("wire", "model"),
    [
        ("openai.embeddings", "text-embedding-3-large"),
        ("google.embed", "gemini-embedding-001"),
        (None, "gpt-4o"),
    ],
)
def test_non_generation_calls_are_neither_classified_nor_routed(wire, model):
    d = auto(model, {"model": model, "input": "hello"}, wire=wire, classify=never)
    assert not d.was_routed and d.reason.startswith("not a generation endpoint")
    assert d.intent is None


def test_the_quality_gate_blocks_a_pair_then_lets_it_recover():
    board = QualityBoard(threshold=0.6, min_ratings=3)
    for _ in range(3):
        board.record("gpt-4o", "gpt-4o-mini", "qa", -1)
    d = auto("gpt-4o-2024-08-06", chat(), gate=board.gate)
    assert not d.was_routed
    assert d.reason == "quality gate: gpt-4o->gpt-4o-mini scored 0% over 3 ratings"
    # other pairs are not gated
    assert auto("gpt-4.1", chat("gpt-4.1"), gate=board.gate).was_routed
    for _ in range(3):
        board.record("gpt-4o", "gpt-4o-mini", "qa", 1, previous=-1)
    assert auto("gpt-4o-2024-08-06", chat(), gate=board.gate).was_routed


def test_the_gate_is_asked_with_families():
    asked = []
    body = claude()
    auto(
        "claude-sonnet-4-20250514", body, wire="anthropic.messages", gate=lambda *p: asked.append(p)
    )
    assert asked == [("claude-sonnet-4-0", "claude-haiku-4-5")]


def test_the_gate_is_not_asked_for_requests_that_stay():
    asked = []
    auto("gpt-4o", chat(), classify=fixed(COMPLEX), gate=lambda f, t: asked.append((f, t)))
    assert asked == []


# --- what blocks routing whatever the target --------------------------------------------

TOOL = {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}


def parts(*content):
    """An OpenAI chat body whose user message is a list of content parts."""
    return chat(text=list(content))


def claude(*content, max_tokens=100, **extra):
    """An Anthropic body: one user message of `content` blocks (text when none)."""
    body = chat("claude-sonnet-4-5", text=list(content)) if content else chat("claude-sonnet-4-5")
    return {**body, "max_tokens": max_tokens, **extra}


def responses(*items, **extra):
    """An OpenAI Responses body with `input` items (a string when none)."""
    return {"model": "gpt-5", "input": list(items) or "hi", **extra}


def gparts(*content, **extra):
    """A Gemini body whose user turn has these parts."""
    return {"contents": [{"role": "user", "parts": list(content)}], **extra}


def config(**generation_config):
    """A Gemini body with a generationConfig."""
    return gemini(generationConfig=generation_config)


IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {}}

UNROUTABLE = [
    # tools
    ("openai.chat", chat(tools=[TOOL]), "tools in request (tools)"),
    ("openai.chat", chat(functions=[TOOL["function"]]), "tools in request (functions)"),
    ("openai.chat", chat(tool_choice="required"), "tools in request (tool_choice)"),
    ("openai.chat", chat(web_search_options={}), None),  # empty: no search asked
    ("openai.chat", chat(web_search_options={"search_context_size": "low"}), "tools in request"),
    ("openai.responses", responses(tools=[{"type": "web_search"}]), "tools in request (tools)"),
    ("anthropic.messages", claude(tools=[{"name": "x", "input_schema": {}}]), "tools in"),
    ("anthropic.messages", claude(mcp_servers=[{"url": "x"}]), "tools in request (mcp_servers)"),
    ("google.generate", gemini(tools=[{"googleSearch": {}}]), "tools in request (tools)"),
    ("google.generate", gemini(toolConfig={"functionCallingConfig": {}}), "tools in request"),
    # tool turns in the conversation
    (
        "openai.chat",
        {"model": "gpt-4o", "messages": [{"role": "tool", "tool_call_id": "1", "content": "4"}]},
        "tool calls in conversation (tool message)",
    ),
    (
        "openai.chat",
        {"model": "gpt-4o", "messages": [{"role": "assistant", "tool_calls": [{"id": "1"}]}]},
        "tool calls in conversation (tool_calls)",
    ),
    (
        "anthropic.messages",
        claude({"type": "tool_result", "tool_use_id": "t", "content": "4"}),
        "tool calls in conversation (tool_result)",
    ),
    (
        "openai.responses",
        responses({"type": "function_call_output", "call_id": "c", "output": "4"}),
        "tool calls in conversation (function_call_output)",
    ),
    (
        "google.generate",
        gparts({"functionCall": {"name": "f"}}),
        "tool calls in conversation (functionCall)",
    ),
    # media and other non-text input
    ("openai.chat", parts({"type": "text", "text": "what?"}, IMAGE), "non-text input (image_url)"),
    ("openai.chat", parts({"type": "input_audio"}), "non-text input (input_audio)"),
    ("openai.chat", parts({"type": "file", "file": {"file_id": "f"}}), "non-text input (file)"),
    (
        "openai.responses",
        responses({"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}),
        "non-text input (input_image)",
    ),
    (
        "openai.responses",
        responses({"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}),
        "non-text input (input_file)",
    ),
    ("anthropic.messages", claude({"type": "image", "source": {}}), "non-text input (image)"),
    ("anthropic.messages", claude({"type": "document"}), "non-text input (document)"),
    (
        "google.generate",
        gparts({"text": "what"}, {"inlineData": {"mimeType": "image/png", "data": "A"}}),
        "non-text input (inlineData)",
    ),
    ("google.stream", gparts({"fileData": {"fileUri": "u"}}), "non-text input (fileData)"),
    (
        "google.generate",
        gemini(systemInstruction={"parts": [{"inlineData": {"data": "A"}}]}),
        "non-text input (inlineData)",
    ),
    # structured output
    ("openai.chat", chat(response_format=JSON_SCHEMA), "structured output (json_schema)"),
    ("openai.chat", chat(response_format={"type": "json_object"}), None),  # JSON mode is fine
    (
        "openai.responses",
        responses(text={"format": {"type": "json_schema", "schema": {}}}),
        "structured output (json_schema)",
    ),
    ("anthropic.messages", claude(output_format=JSON_SCHEMA), "structured output"),
    (
        "google.generate",
        config(responseMimeType="application/json", responseSchema={"type": "OBJECT"}),
        "structured output (responseSchema)",
    ),
    (
        "google.generate",
        gemini(generation_config={"response_json_schema": {"type": "object"}}),
        "structured output (response_json_schema)",
    ),
    ("google.generate", config(responseMimeType="application/json"), None),
    # non-text output
    ("openai.chat", chat(modalities=["text", "audio"]), "non-text output (audio)"),
    ("openai.chat", chat(audio={"voice": "alloy"}), "non-text output (audio)"),
    ("google.generate", config(responseModalities=["TEXT", "IMAGE"]), "non-text output (IMAGE)"),
    ("google.generate", config(speechConfig={"voiceConfig": {}}), "non-text output (speech)"),
    ("google.generate", config(responseModalities=["TEXT"]), None),
    # state held upstream, or a model that is not in the body
    (
        "openai.responses",
        responses(previous_response_id="resp_1"),
        "conversation held upstream (previous_response_id)",
    ),
    ("openai.responses", responses(prompt={"id": "pmpt_1"}), "conversation held upstream"),
    ("openai.responses", responses({"type": "reasoning"}), "reasoning items in input"),
    ("google.generate", gemini(cachedContent="cachedContents/1"), "cached content is tied"),
    ("openai.chat", {"messages": [{"role": "user", "content": "hi"}]}, "model not named"),
    ("openai.chat", None, "no JSON body"),
    # plain text is fine on every wire
    ("openai.chat", parts({"type": "text", "text": "hi"}), None),
    ("openai.completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"}, None),
    (
        "openai.responses",
        responses(
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            instructions="Be brief",
        ),
        None,
    ),
    ("anthropic.messages", claude(system=[{"type": "text", "text": "Be brief"}]), None),
    ("anthropic.messages", claude({"type": "text", "text": "hi"}), None),
    ("google.generate", gemini(systemInstruction={"parts": [{"text": "Be brief"}]}), None),
]


@pytest.mark.parametrize(("wire", "body", "expected"), UNROUTABLE)
def test_unroutable_reason(wire, body, expected):
    reason = unroutable_reason(wire, body)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(expected), reason


@pytest.mark.parametrize(("wire", "body", "expected"), [u for u in UNROUTABLE if u[2]][:12])
def test_auto_does_not_route_unroutable_requests(wire, body, expected):
    model = "gemini-2.5-pro" if wire.startswith("google") else (body or {}).get("model", "gpt-4o")
    d = auto(model, body, wire=wire)
    assert not d.was_routed and d.reason.startswith(expected)


def test_a_malformed_body_is_not_routed():
    class Exploding(dict):
        def get(self, key, default=None):
            if key == "messages":
                raise RuntimeError("boom")
            return super().get(key, default)

    assert unroutable_reason("openai.chat", Exploding(model="gpt-4o")) == "malformed request body"


# --- whether the target can serve it ----------------------------------------------------


THINK = {"type": "enabled", "budget_tokens": 2000}
LONG = "x" * 600_000


@pytest.mark.parametrize(
    ("to_model", "wire", "body", "expected"),
    [
        # context window and output cap
        ("gpt-4o-mini", "openai.chat", chat(text=LONG), "prompt ~150000 tokens (+0 output)"),
        ("gpt-4.1-mini", "openai.chat", chat(text=LONG), None),
        ("gpt-4o-mini", "openai.chat", chat(max_completion_tokens=30_000), "gpt-4o-mini writes"),
        ("claude-3-5-haiku", "anthropic.messages", claude(max_tokens=20_000), "claude-3-5-haiku"),
        ("claude-haiku-4-5", "anthropic.messages", claude(max_tokens=20_000), None),
        ("gemini-1.5-flash", "google.generate", config(maxOutputTokens=9000), "gemini-1.5-flash"),
        # OpenAI reasoning parameters
        ("gpt-4o-mini", "openai.chat", chat(reasoning_effort="low"), "gpt-4o-mini takes no"),
        ("gpt-4o-mini", "openai.responses", responses(reasoning={"summary": "auto"}), "gpt-4o"),
        ("gpt-5-mini", "openai.chat", chat(reasoning_effort="minimal"), None),
        ("gpt-5-mini", "openai.chat", chat(reasoning_effort="none"), "gpt-5-mini takes no"),
        ("o4-mini", "openai.responses", responses(reasoning={"effort": "high"}), None),
        ("o4-mini", "openai.responses", responses(reasoning={"effort": "minimal"}), "o4-mini"),
        ("o4-mini", "openai.chat", chat(temperature=0.2), "reasoning model o4-mini refuses"),
        ("o4-mini", "openai.chat", chat(temperature=1, logprobs=False), None),
        ("gpt-5-nano", "openai.chat", chat(logprobs=True), "reasoning model gpt-5-nano refuses"),
        ("gpt-5-nano", "openai.chat", chat(max_tokens=100), "reasoning model gpt-5-nano refuses"),
        ("gpt-5-nano", "openai.chat", chat(max_completion_tokens=100), None),
        # Gemini's OpenAI-compatible API takes both
        ("gemini-2.5-flash", "openai.chat", chat(reasoning_effort="low", temperature=0.2), None),
        # Claude extended thinking
        ("claude-3-5-haiku", "anthropic.messages", claude(thinking=THINK), "claude-3-5-haiku"),
        ("claude-haiku-4-5", "anthropic.messages", claude(thinking=THINK), None),
        ("claude-3-5-haiku", "anthropic.messages", claude(thinking={"type": "disabled"}), None),
        # Gemini thinking
        (
            "gemini-2.5-flash",
            "google.generate",
            config(thinkingConfig={"thinkingLevel": "low"}),
            "gemini-2.5-flash takes no thinkingLevel",
        ),
        ("gemini-2.5-flash", "google.generate", config(thinkingConfig={"thinkingBudget": 9}), None),
        (
            "gemini-1.5-flash",
            "google.generate",
            config(thinkingConfig={"thinkingBudget": 9}),
            "gemini-1.5-flash has no thinking config",
        ),
        # dated names are looked up by family; unknown targets are not checked
        ("gpt-4o-mini-2024-07-18", "openai.chat", chat(reasoning_effort="low"), "gpt-4o-mini"),
        ("my-deployment", "openai.chat", chat(reasoning_effort="low", max_tokens=10**6), None),
        ("gpt-4o-mini", "openai.chat", None, None),
    ],
)
def test_target_serves(to_model, wire, body, expected):
    reason = target_serves(to_model, body, wire)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(expected), reason


def test_target_serves_uses_a_given_prompt_estimate():
    assert target_serves("gpt-4o-mini", chat(), "openai.chat", prompt_tokens=200_000)
    assert target_serves("gpt-4o-mini", chat(), "openai.chat", prompt_tokens=1_000) is None


def test_auto_keeps_requests_the_target_cannot_serve():
    d = auto(
        "claude-3-7-sonnet", claude(thinking=THINK, max_tokens=4000), wire="anthropic.messages"
    )
    assert not d.was_routed and d.reason == "claude-3-5-haiku-latest has no extended thinking"
    d = auto("gpt-5.1", chat("gpt-5.1", reasoning_effort="none"))
    assert not d.was_routed and "reasoning effort 'none'" in d.reason
    big = Classification("qa", "simple", 0.9, "long but simple", 150_000)
    d = auto("gpt-4o", chat(), classify=fixed(big))
    assert not d.was_routed and "exceeds gpt-4o-mini's 128000" in d.reason


def test_gemini_3_routes_to_flash_with_its_thinking_level():
    assert (
        auto("gemini-3-pro-preview", gemini(), wire="google.generate").to_model
        == "gemini-3-flash-preview"
    )
    # Gemini 3 Flash takes thinkingLevel too; Gemini 2.5 Pro's step (2.5 Flash) does not.
    body = gemini(generationConfig={"thinkingConfig": {"thinkingLevel": "low"}})
    assert auto("gemini-3-pro-preview", body, wire="google.generate").was_routed
    assert not auto("gemini-2.5-pro", body, wire="google.generate").was_routed


# --- manual ---------------------------------------------------------------------------


def test_the_short_only_estimate_is_the_classifiers():
    for body in (chat(text="word " * 700), claude(system="Be brief"), gemini(), responses()):
        assert estimate_prompt_tokens(body) == classify_body(body).prompt_tokens


def test_manual_always_rule_routes_without_classifying():
    d = manual("gpt-4o", chat(), [rule("gpt-4o", "gpt-4o-mini")])
    assert d.was_routed and d.to_model == "gpt-4o-mini" and d.rule == 0 and d.mode == "manual"
    assert d.reason == "rule 0 gpt-4o -> gpt-4o-mini (always)"
    assert (d.intent, d.complexity, d.confidence) == (None, None, None)


def test_manual_globs_match_the_model_as_sent_or_its_family_case_insensitively():
    rules = [rule("GPT-4O", "gpt-4o-mini")]
    assert manual("gpt-4o-2024-08-06", chat(), rules).was_routed  # via the family
    assert manual("gpt-4o-2024-08-06", chat(), [rule("gpt-4o-2024-*", "gpt-4o-mini")]).was_routed
    rules = [rule("claude-*-4-5*", "claude-haiku-4-5")]
    d = manual("claude-sonnet-4-5-20250929", claude(), rules, wire="anthropic.messages")
    assert d.was_routed
    d = manual("gpt-4.1", chat(), [rule("gpt-4o*", "gpt-4o-mini")])
    assert not d.was_routed and d.reason == "no rule matches gpt-4.1" and d.rule is None


def test_manual_first_matching_rule_wins():
    rules = [
        rule("gpt-4.1*", "gpt-4.1-nano"),
        rule("gpt-4o*", "gpt-4o-mini"),
        rule("gpt-*", "gpt-4.1-nano"),
    ]
    d = manual("gpt-4o", chat(), rules)
    assert (d.to_model, d.rule) == ("gpt-4o-mini", 1)
    assert d.reason == "rule 1 gpt-4o* -> gpt-4o-mini (always)"


def test_a_rule_to_the_same_model_pins_it():
    rules = [rule("gpt-4o-2024-08-06", "GPT-4o-2024-08-06"), rule("gpt-4o*", "gpt-4o-mini")]
    d = manual("gpt-4o-2024-08-06", chat(), rules)
    assert not d.was_routed and d.rule == 0 and d.reason.endswith("keeps the model")
    assert manual("gpt-4o", chat(), rules).to_model == "gpt-4o-mini"


def test_manual_simple_only_runs_the_classifier_once():
    classify = fixed(SIMPLE)
    rules = [rule("gpt-4o", "gpt-4o-mini", "simple-only")]
    d = manual("gpt-4o", chat(), rules, classify=classify)
    assert d.was_routed and d.intent == "qa" and d.confidence == 0.9 and classify.calls == 1
    assert d.reason == "rule 0 gpt-4o -> gpt-4o-mini (simple-only): simple (qa, 0.90)"
    classify = fixed(COMPLEX)
    rules = [
        rule("gpt-4o", "gpt-4o-mini", "simple-only"),
        rule("gpt-4o*", "gpt-4.1-nano", "simple-only"),
    ]
    d = manual("gpt-4o", chat(), rules, classify=classify)
    assert not d.was_routed and classify.calls == 1 and d.complexity == "complex"
    assert d.reason.startswith("rule 0 gpt-4o -> gpt-4o-mini (simple-only): complex: ")
    assert "; rule 1 " in d.reason
    d = manual("gpt-4o", chat(), rules[:1], classify=fixed(UNSURE))
    assert not d.was_routed and "confidence 0.50 < 0.75" in d.reason


def test_manual_short_only_estimates_without_the_classifier():
    rules = [rule("gpt-4o", "gpt-4o-mini", "short-only")]
    d = manual("gpt-4o", chat(text="Hi there"), rules)
    assert d.was_routed and d.intent is None
    assert d.reason.startswith("rule 0 gpt-4o -> gpt-4o-mini (short-only): ~")
    d = manual("gpt-4o", chat(text="word " * 2000), rules)
    assert not d.was_routed and ">= 500" in d.reason
    assert manual("gpt-4o", chat(text="word " * 2000), rules, short_prompt_tokens=10_000).was_routed


def test_a_later_rule_applies_when_an_earlier_condition_fails():
    classify = fixed(COMPLEX)
    rules = [rule("gpt-4o", "gpt-4o-mini", "simple-only"), rule("gpt-4o", "gpt-4.1-mini")]
    d = manual("gpt-4o", chat(), rules, classify=classify)
    assert (d.to_model, d.rule, d.complexity) == ("gpt-4.1-mini", 1, "complex")


def test_manual_rules_ignore_the_quality_gate():
    rules = [rule("gpt-4o", "gpt-4o-mini")]
    d = manual("gpt-4o", chat(), rules, gate=lambda f, t: "quality gate: closed")
    assert d.was_routed


def test_manual_refuses_cross_provider_rules_and_tries_the_next():
    rules = [rule("gpt-4o", "claude-haiku-4-5"), rule("gpt-4o", "gemini-2.5-flash-lite")]
    d = manual("gpt-4o", chat(), rules)
    assert not d.was_routed
    assert d.reason == (
        "rule 0 gpt-4o -> claude-haiku-4-5 (always): target is another provider's model "
        "(anthropic); rule 1 gpt-4o -> gemini-2.5-flash-lite (always): target is another "
        "provider's model (google)"
    )
    d = manual("gpt-4o", chat(), [*rules, rule("gpt-4o", "gpt-4.1-nano")])
    assert (d.to_model, d.rule) == ("gpt-4.1-nano", 2)
    # Unknown names follow their naming scheme; names no scheme knows are the user's call.
    assert not manual("gpt-4o", chat(), [rule("*", "claude-9-new")]).was_routed
    assert manual("gpt-4o", chat(), [rule("*", "ft:gpt-4o-mini:acme::abc")]).was_routed
    assert manual("gpt-4o", chat(), [rule("*", "my-company-model")]).was_routed


def test_manual_never_routes_unroutable_requests():
    d = manual("gpt-4o", chat(tools=[TOOL]), [rule("gpt-4o", "gpt-4o-mini")])
    assert not d.was_routed and d.reason == "tools in request (tools): rule 0 not applied"
    d = manual("gpt-4o", chat(reasoning_effort="high"), [rule("gpt-4o", "gpt-4o-mini")])
    assert not d.was_routed and d.reason.endswith("gpt-4o-mini takes no reasoning parameters")


def test_manual_gemini_rule_on_a_gemini_path():
    rules = [rule("gemini-*-pro", "models/gemini-2.5-flash")]
    d = manual("gemini-2.5-pro", gemini(), rules, wire="google.stream")
    assert d.was_routed and d.to_model == "models/gemini-2.5-flash"
    path = "v1beta/models/gemini-2.5-pro:streamGenerateContent"
    path, _ = apply_route("google.stream", path, gemini(), d.to_model)
    assert path == "v1beta/models/gemini-2.5-flash:streamGenerateContent"


# --- paths ----------------------------------------------------------------------------


def test_decide_checks_the_path_when_given():
    azure = "openai/deployments/gpt-4o/chat/completions"
    d = auto("gpt-4o", chat(), path=azure, classify=never)
    assert not d.was_routed and d.reason == "the path names an Azure deployment"
    assert auto("gpt-4o", chat(), path="v1/chat/completions").was_routed
    assert path_reason("google.generate", "v1beta/cachedContents/x:generateContent") == (
        "no model in the path"
    )


VERTEX = "v1/projects/p/locations/us-central1/publishers/google"


@pytest.mark.parametrize(
    ("wire", "template", "model"),
    [
        ("google.generate", "v1beta/models/{}:generateContent", "gemini-2.5-pro"),
        ("google.generate", "/v1/models/{}:generateContent", "gemini-2.5-pro"),
        ("google.stream", "v1beta/models/{}:streamGenerateContent?alt=sse", "gemini-2.5-pro-001"),
        ("google.stream", "v1/models/{}:streamGenerateContent", "gemini-2.5-pro"),
        ("google.generate", "lcm/proxy/google/v1beta/models/{}:generateContent", "gemini-2.5-pro"),
        ("google.generate", VERTEX + "/models/{}:generateContent", "gemini-2.5-pro"),
    ],
)
def test_apply_route_on_gemini_replaces_the_model_in_the_path(wire, template, model):
    body = gemini()
    before = repr(body)
    new_path, new_body = apply_route(wire, template.format(model), body, "gemini-2.5-flash")
    assert new_path == template.format("gemini-2.5-flash")
    assert new_body == body and repr(body) == before


def test_apply_route_sends_a_tuned_model_call_to_a_base_model():
    path, _ = apply_route(
        "google.generate",
        "v1beta/tunedModels/my-tuned:generateContent",
        gemini(),
        "gemini-2.5-flash",
    )
    assert path == "v1beta/models/gemini-2.5-flash:generateContent"


@pytest.mark.parametrize(
    ("wire", "path"),
    [
        ("openai.chat", "v1/chat/completions"),
        ("openai.completions", "v1/completions"),
        ("openai.responses", "v1/responses"),
        ("anthropic.messages", "v1/messages"),
        ("openai.chat", "v1beta/openai/chat/completions"),
    ],
)
def test_apply_route_replaces_the_body_model_in_a_new_dict(wire, path):
    body = {"model": "big", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    new_path, new_body = apply_route(wire, path, body, "small")
    assert new_path == path
    assert new_body == {**body, "model": "small"}
    assert new_body is not body and body["model"] == "big"
    assert new_body["messages"] is body["messages"]  # shallow: only the model changes


@pytest.mark.parametrize(
    ("wire", "path", "body"),
    [
        ("openai.chat", "openai/deployments/gpt-4o/chat/completions?api-version=1", chat()),
        ("google.generate", "v1beta/models:generateContent", gemini()),
        ("openai.chat", "v1/chat/completions", None),
    ],
)
def test_apply_route_refuses_what_it_cannot_reroute(wire, path, body):
    with pytest.raises(ValueError, match="cannot route"):
        apply_route(wire, path, body, "gpt-4o-mini")


# --- the ladder -----------------------------------------------------------------------


@pytest.mark.parametrize(("source", "target"), sorted(DEFAULT_LADDER.items()))
def test_every_ladder_step_is_cheaper_and_stays_with_the_provider(source, target):
    src, dst = PRICES.resolve(source), PRICES.resolve(target)
    assert src is not None and dst is not None
    assert (src.model, dst.model) == (source, target)  # keyed by family ids
    assert src.provider == dst.provider
    src_in, src_out = src.rate("input_tokens").base, src.rate("output_tokens").base
    dst_in, dst_out = dst.rate("input_tokens").base, dst.rate("output_tokens").base
    assert dst_in <= src_in and dst_out <= src_out
    assert (dst_in, dst_out) != (src_in, src_out)
    assert facts_for(target) is not None  # so target_serves can check it


def test_the_ladder_has_no_cycles():
    for start in DEFAULT_LADDER:
        seen, model = {start}, start
        while model in DEFAULT_LADDER:
            model = DEFAULT_LADDER[model]
            assert model not in seen
            seen.add(model)


# --- speed ----------------------------------------------------------------------------


def test_the_default_verdict_is_the_learned_difficulty():
    # No classifier injected: the learned scorer decides (its figures and timing are in
    # tests/benchmarks/eval_routing.py), the keyword classifier only names the intent.
    def decide_auto(text, model="gpt-4o-2024-08-06"):
        body = chat(text=text)
        body["messages"].insert(0, {"role": "system", "content": "You are a helpful assistant."})
        return decide(
            mode="auto", model=model, wire="openai.chat", body=body, rules=[], prices=PRICES
        )

    easy = decide_auto("What is the capital of France? Answer in one word.")
    assert easy.was_routed and easy.to_model == "gpt-4o-mini" and easy.intent
    assert easy.confidence > DEFAULT_MIN_CONFIDENCE
    hard = decide_auto(
        "Hi there! Prove that there are infinitely many primes p such that p + 2 is "
        "composite, and give the argument step by step."
    )
    assert not hard.was_routed and hard.complexity == "complex"
    foreign = decide_auto("Quelle est la capitale de la France ?")
    assert not foreign.was_routed and "not judged" in foreign.reason
