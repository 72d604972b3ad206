"""Request classifier: prompt extraction on every wire, intents, complexity, routing guard."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from lcm_jupyter.core.classifier import INTENTS, Classification, classify, classify_body
from lcm_jupyter.core.prompt import PromptView, prompt_view
from tests.benchmarks.eval_routing import chat_body, load, metrics, routed

EVAL_SET = Path(__file__).parent / "data" / "routing_eval.jsonl"


def chat(text: str, system: str | None = None, history: list | None = None) -> dict:
    """An OpenAI chat body."""
    messages = [{"role": "system", "content": system}] if system else []
    messages += history or []
    messages.append({"role": "user", "content": text})
    return {"model": "gpt-4o", "messages": messages}


# --- prompt_view: every wire --------------------------------------------------------------


def test_openai_chat_string_and_parts():
    view = prompt_view(
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "an answer"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                        {"type": "text", "text": "this picture?"},
                    ],
                },
            ],
        }
    )
    assert view.system == "Be terse.\nNo emoji."
    assert view.last_user == "What is in\nthis picture?"
    assert view.turns == 3
    assert view.has_media is True
    assert view.total_chars == len(
        "Be terse.No emoji.first questionan answerWhat is inthis picture?"
    )


def test_openai_tool_messages_are_context_not_user():
    view = prompt_view(
        {
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"function": {"name": "w", "arguments": '{"city":"Paris"}'}}],
                },
                {"role": "tool", "tool_call_id": "1", "content": "18C, cloudy"},
            ]
        }
    )
    assert view.last_user == "Weather in Paris?"
    assert view.turns == 3
    assert view.total_chars == len("Weather in Paris?") + len('{"city":"Paris"}') + len(
        "18C, cloudy"
    )


def test_legacy_completions_prompt():
    assert prompt_view({"model": "davinci-002", "prompt": "Once upon"}).last_user == "Once upon"
    view = prompt_view({"prompt": ["short", "the longest one", 7]})
    assert view.last_user == "the longest one" and view.turns == 1
    assert view.total_chars == len("short") + len("the longest one")


def test_responses_string_and_items():
    view = prompt_view({"model": "gpt-4o", "instructions": "Be brief.", "input": "Hello there"})
    assert (view.system, view.last_user, view.turns) == ("Be brief.", "Hello there", 1)
    view = prompt_view(
        {
            "input": [
                {"role": "developer", "content": "Rules."},
                {"role": "user", "content": [{"type": "input_text", "text": "Find flights"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a":1}'},
                {"type": "function_call_output", "call_id": "c1", "output": "3 flights"},
                {"type": "reasoning", "summary": []},
                {"type": "input_text", "text": "cheapest?"},
            ]
        }
    )
    assert view.system == "Rules."
    assert view.last_user == "cheapest?"
    assert view.turns == 4
    assert view.has_media is False


def test_responses_token_ids_are_not_text():
    assert prompt_view({"model": "text-embedding-3-small", "input": [[1, 2, 3]]}).last_user == ""


def test_anthropic_system_blocks_documents_and_tool_loop():
    view = prompt_view(
        {
            "model": "claude-sonnet-4-5",
            "system": [{"type": "text", "text": "You are careful.", "cache_control": {}}],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "DOC"},
                        },
                        {"type": "text", "text": "Summarize the document."},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "x" * 100},
                        {"type": "tool_use", "id": "t1", "name": "search", "input": {"q": "abc"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "found"}],
                },
            ],
        }
    )
    assert view.system == "You are careful."
    # A user turn of only tool results is the loop going on: the ask is still the one before.
    assert view.last_user == "DOC\nSummarize the document."
    assert view.turns == 3
    assert view.total_chars == len("You are careful.DOCSummarize the document.hmmabcfound")
    assert view.has_media is False


def test_anthropic_string_system_and_pdf_is_media():
    view = prompt_view(
        {
            "system": "Sys",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "document", "source": {"type": "base64", "data": "JVBERi0"}},
                        {"type": "text", "text": "What does this PDF say?"},
                    ],
                }
            ],
        }
    )
    assert (view.system, view.last_user, view.has_media) == ("Sys", "What does this PDF say?", True)


def test_gemini_contents_system_instruction_and_media():
    view = prompt_view(
        {
            "systemInstruction": {"parts": [{"text": "Answer in French."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "Hi"}]},
                {"role": "model", "parts": [{"text": "Bonjour"}]},
                {
                    "role": "user",
                    "parts": [
                        {"text": "Describe"},
                        {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
                    ],
                },
            ],
        }
    )
    assert view.system == "Answer in French."
    assert view.last_user == "Describe"
    assert view.turns == 3
    assert view.has_media is True
    snake = prompt_view(
        {
            "system_instruction": {"parts": [{"text": "S"}]},
            "contents": [
                {"parts": [{"text": "no role means user"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"x": "yz"}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]},
            ],
        }
    )
    assert snake.system == "S" and snake.last_user == "no role means user"
    assert prompt_view({"contents": "plain string"}).last_user == "plain string"
    assert prompt_view({"contents": {"parts": [{"text": "one"}]}}).last_user == "one"


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "text",
        42,
        {},
        {"messages": "not a list"},
        {"messages": [None, 3, ["x"], {"role": ["unhashable"], "content": {"type": [1]}}]},
        {"messages": [{"role": "user", "content": 12}]},
        {"messages": [{"role": "user"}]},
        {"system": 5, "messages": [{"role": "user", "content": [None, 1, {"text": None}]}]},
        {"input": [{"type": {"odd": 1}}]},
        {"contents": [{"parts": "not a list"}]},
        {"prompt": None},
    ],
)
def test_odd_shapes_never_raise(body):
    view = prompt_view(body)
    assert isinstance(view, PromptView)
    result = classify(view)
    assert result.intent in INTENTS and 0 <= result.confidence <= 1


def test_cyclic_body_does_not_raise():
    part: dict = {"type": "text"}
    part["content"] = [part]
    view = prompt_view({"messages": [{"role": "user", "content": [part, {"text": "after"}]}]})
    assert isinstance(view, PromptView)


def test_empty_user_text_is_never_simple():
    assert classify_body(None).complexity == "complex"
    image_only = {
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]
    }
    result = classify_body(image_only)
    assert result.complexity == "complex" and result.confidence < 0.7


def test_prompt_view_is_fast():
    body = chat("What is the capital of Australia?", system="You are helpful.")
    start = time.perf_counter()
    for _ in range(2000):
        prompt_view(body)
    assert (time.perf_counter() - start) / 2000 < 200e-6  # measured ~3 us


# --- classify: clear cases -----------------------------------------------------------------

SIMPLE = [
    "hi",
    "thanks, that fixed it!",
    "What is the capital of Japan?",
    "Convert 10 miles to kilometers.",
    "How many grams are in a pound?",
    "Who painted the Mona Lisa?",
    "What does SQL stand for?",
    "How do I drop duplicate rows in pandas?",
    "Translate 'good night' into Spanish.",
    "Write a haiku about the ocean.",
    "Give me three name ideas for a data team newsletter.",
    "Fix the grammar: 'She don't like the results.'",
    "Summarize in one sentence: The meeting moved to Friday because two speakers were ill.",
    "Extract the email address from: 'Reach me at jo@example.org after 5pm.'",
]

COMPLEX = [
    "Prove that there are infinitely many primes.",
    "Why does my LSTM overfit?",
    "Design a multi-region event ingestion pipeline handling 100k events/s with exactly-once "
    "delivery, and discuss the trade-offs of Kafka vs Kinesis.",
    "Traceback (most recent call last):\n"
    '  File "app.py", line 3, in <module>\n'
    "    main()\n"
    "KeyError: 'user_id'\n\nWhy does this happen only in production?",
    "Compare random forests and gradient boosting for tabular churn prediction, in depth.",
    "Write a 2,000-word short story about a lighthouse keeper who collects lost data.",
    "Should we use a star schema or one big table for our warehouse, and why?",
    "A bag has 4 red and 6 blue balls. If I draw 3 without replacement, what is the "
    "probability that exactly 2 are red?",
    "Explain step by step how the EM algorithm converges.",
    "What are the pitfalls of using accuracy on an imbalanced dataset, and what should we "
    "use instead?",
]


@pytest.mark.parametrize("text", SIMPLE)
def test_clear_simple(text):
    result = classify_body(chat(text))
    assert result.complexity == "simple", result
    assert result.confidence >= 0.7, result


@pytest.mark.parametrize("text", COMPLEX)
def test_clear_complex(text):
    result = classify_body(chat(text))
    assert result.complexity == "complex", result
    assert result.confidence >= 0.7, result


def test_long_document_to_summarize_is_complex():
    paragraph = (
        "The quarterly review found that revenue grew in three regions while costs rose "
        "faster than planned in the fourth, mostly because of delayed hardware deliveries "
        "and overtime during the migration. "
    )
    short = classify_body(chat("Summarize: " + paragraph))
    long = classify_body(chat("Summarize this report:\n\n" + "\n\n".join([paragraph * 4] * 5)))
    assert short.intent == long.intent == "summarize"
    assert short.complexity == "simple"
    assert long.complexity == "complex" and long.confidence >= 0.9


def test_translation_size_and_register():
    assert classify_body(chat("Translate 'see you tomorrow' to German.")).complexity == "simple"
    legal = classify_body(
        chat("Translate this contract clause into French with correct legal terminology: ...")
    )
    assert legal.intent == "translate" and legal.complexity == "complex"


def test_creative_short_and_long_form():
    assert classify_body(chat("Write a limerick about pandas.")).complexity == "simple"
    essay = classify_body(chat("Write a persuasive essay on open data, about 1500 words."))
    assert essay.intent == "creative" and essay.complexity == "complex"
    titles = classify_body(chat("Suggest three titles for a blog post about dbt."))
    assert titles.complexity == "simple"


def test_context_signals():
    history = []
    for i in range(6):
        history.append({"role": "user", "content": f"Part {i}: " + "details " * 400})
        history.append({"role": "assistant", "content": "Noted. " + "analysis " * 400})
    assert classify_body(chat("ok, continue", history=history)).complexity == "complex"
    assert classify_body(chat("ok, continue")).complexity == "simple"
    plain = classify_body(chat("What is the capital of Peru?"))
    with_image = classify_body(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is the capital of Peru?"},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    ],
                }
            ]
        }
    )
    assert with_image.confidence < plain.confidence
    long_system = classify_body(chat("What is the capital of Peru?", system="Rule. " * 900))
    assert long_system.confidence < plain.confidence or long_system.complexity == "complex"


# --- classify: intents ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("hello!", "chat"),
        ("Thank you, that was helpful.", "chat"),
        ("What is the tallest mountain in Africa?", "simple_qa"),
        ("Convert 30 degrees Celsius to Fahrenheit.", "simple_qa"),
        ("Summarize: the launch slipped a week because QA found two blockers.", "summarize"),
        (
            "tl;dr please: the cache hit rate fell after the deploy because keys changed.",
            "summarize",
        ),
        ("Translate 'where is the library' into Italian.", "translate"),
        ("How do you say 'thank you' in Korean?", "translate"),
        ("Extract the dates from: 'Kickoff 3 May, review 9 June.'", "extract"),
        ("List all the company names in: 'Acme hired Initech and Globex.'", "extract"),
        ("How do I pivot a dataframe in pandas?", "code"),
        ("```python\nx = [1, 2, 3]\nprint(x[3])\n```\nIndexError: list index out of range", "code"),
        ("Prove that the square of an odd number is odd.", "reasoning"),
        (
            "Compare PostgreSQL and MongoDB for an analytics workload and recommend one.",
            "reasoning",
        ),
        ("Write a haiku about winter.", "creative"),
        ("Draft a short thank-you note to the ops team.", "creative"),
    ],
)
def test_intents(text, intent):
    assert classify_body(chat(text)).intent == intent


def test_same_text_same_result_on_every_wire():
    text = "How do I read a CSV file with pandas?"
    responses_item = {"role": "user", "content": [{"type": "input_text", "text": text}]}
    anthropic_message = {"role": "user", "content": [{"type": "text", "text": text}]}
    bodies = [
        chat(text),
        {"model": "gpt-4o", "input": text},
        {"model": "gpt-4o", "input": [responses_item]},
        {"model": "claude-sonnet-4-5", "messages": [anthropic_message]},
        {"contents": [{"role": "user", "parts": [{"text": text}]}]},
        {"model": "davinci-002", "prompt": text},
    ]
    results = {classify_body(body) for body in bodies}
    assert len(results) == 1


def test_deterministic_and_well_formed():
    for item in load(EVAL_SET)[:60]:
        body = chat_body(item)
        first, second = classify_body(body), classify_body(json.loads(json.dumps(body)))
        assert first == second
        assert isinstance(first, Classification)
        assert first.intent in INTENTS
        assert first.complexity in ("simple", "complex")
        assert 0.5 <= first.confidence <= 0.97
        assert first.reason and "\n" not in first.reason
        chars = prompt_view(body).total_chars
        assert first.prompt_tokens == math.ceil(chars / 4)


def test_huge_prompt_stays_fast():
    text = "Summarize the following log.\n" + ("INFO worker started; queue depth 12\n" * 6000)
    body = chat(text)
    classify_body(body)
    start = time.perf_counter()
    for _ in range(20):
        result = classify_body(body)
    assert (time.perf_counter() - start) / 20 < 5e-3  # measured ~0.6 ms, mostly prompt_view
    assert result.complexity == "complex"


# --- the labelled set: its shape, and a guard on the routing figures ------------------------


def test_eval_set_shape():
    items = load(EVAL_SET)
    assert len(items) >= 240
    assert len({item["prompt"] for item in items}) == len(items)
    for item in items:
        assert item["label"] in ("simple", "complex")
        assert item["intent"] in INTENTS
        assert item["split"] in ("tune", "holdout")
    simple = sum(item["label"] == "simple" for item in items) / len(items)
    assert 0.4 <= simple <= 0.6
    holdout = sum(item["split"] == "holdout" for item in items) / len(items)
    assert 0.25 <= holdout <= 0.4
    assert {item["intent"] for item in items} == set(INTENTS)


def test_routing_guard_on_eval_set():
    """Routing figures at threshold 0.7, with margin below what was measured.

    Measured (tests/benchmarks/eval_routing.py): 0 of 130 complex prompts routed down,
    40.8% of calls routed, complexity accuracy 96.8%, routing precision 100%.
    """
    items = load(EVAL_SET)
    rows = [(item, classify_body(chat_body(item))) for item in items]
    m = metrics(rows, 0.7)
    assert m["complex_routed_rate"] <= 0.03, m  # at most 3 of 130
    assert m["routed_share"] >= 0.33, m  # the brief's floor is 25%
    assert m["complexity_accuracy"] >= 0.90, m  # the brief's floor is 80%
    assert m["routing_precision"] >= 0.97, m
    holdout = [(item, c) for item, c in rows if item["split"] == "holdout"]
    assert metrics(holdout, 0.7)["complex_routed"] <= 1
    # A higher threshold never routes more.
    assert sum(routed(c, 0.9) for _, c in rows) <= sum(routed(c, 0.7) for _, c in rows)
