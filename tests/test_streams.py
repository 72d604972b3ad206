"""Incremental SSE / JSON-array parsing and StreamMeter, on real providers' wire formats."""

from __future__ import annotations

import json
import random

import pytest

from lcm_jupyter.core.streams import (
    JSONArrayParser,
    SSEParser,
    StreamMeter,
    ensure_stream_usage,
)
from lcm_jupyter.core.usage import Step, Usage

# --- fixtures: streams as the providers send them ---------------------------------------------


def sse(*events: str, end: str = "\n") -> bytes:
    """Join event texts (lines separated by \\n) into an SSE stream with the given line ending."""
    return "".join(e.replace("\n", end) + end + end for e in events).encode()


def chunk_json(**fields: object) -> str:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


_CHAT_HEAD = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion.chunk",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "service_tier": "default",
    "system_fingerprint": "fp_eb9dce56a8",
}
OPENAI_USAGE = {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 4,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}


def chat_delta(delta: dict, finish: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return "data: " + chunk_json(**_CHAT_HEAD, choices=[choice], usage=None)


CHAT_USAGE_EVENT = "data: " + chunk_json(**_CHAT_HEAD, choices=[], usage=OPENAI_USAGE)
CHAT_EVENTS = [
    chat_delta({"role": "assistant", "content": "", "refusal": None}),
    chat_delta({"content": "Héllo 👋 — "}),  # multi-byte characters to split inside
    chat_delta({"content": 'a "usage" of {braces}\\n'}),
    chat_delta({}, "stop"),
]
CHAT_STREAM = sse(*CHAT_EVENTS, CHAT_USAGE_EVENT, "data: [DONE]")
CHAT_WITHOUT_USAGE = sse(*CHAT_EVENTS, "data: [DONE]")

ANTHROPIC_START = {
    "type": "message_start",
    "message": {
        "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-sonnet-4-5-20250929",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 25,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 2000,
            "output_tokens": 1,
        },
    },
}


def anthropic_stream(delta_usage: dict, end: str = "\n") -> bytes:
    return sse(
        "event: message_start\ndata: " + json.dumps(ANTHROPIC_START),
        'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        '"content_block":{"type":"text","text":""}}',
        'event: ping\ndata: {"type": "ping"}',
        'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        '"delta":{"type":"text_delta","text":"Bonjour à tous ✨"}}',
        'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}',
        "event: message_delta\ndata: "
        + json.dumps(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": delta_usage,
            }
        ),
        'event: message_stop\ndata: {"type":"message_stop"}',
        end=end,
    )


ANTHROPIC_STREAM = anthropic_stream({"output_tokens": 15})
ANTHROPIC_USAGE = Usage(
    input_tokens=2125, output_tokens=15, cached_tokens=2000, cache_write_tokens=100
)

_RESPONSE = {
    "id": "resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654",
    "object": "response",
    "created_at": 1741290958,
    "status": "in_progress",
    "error": None,
    "incomplete_details": None,
    "instructions": "You are a helpful assistant.",
    "model": "gpt-4.1-2025-04-14",
    "output": [],
    "parallel_tool_calls": True,
    "reasoning": {"effort": None, "summary": None},
    "tool_choice": "auto",
    "tools": [],
    "usage": None,
}
RESPONSES_USAGE = {
    "input_tokens": 37,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 11,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 48,
}


def responses_event(kind: str, seq: int, **fields: object) -> str:
    return f"event: {kind}\ndata: " + chunk_json(type=kind, sequence_number=seq, **fields)


RESPONSES_STREAM = sse(
    responses_event("response.created", 0, response=_RESPONSE),
    responses_event("response.in_progress", 1, response=_RESPONSE),
    responses_event(
        "response.output_item.added",
        2,
        output_index=0,
        item={"id": "msg_1", "type": "message", "status": "in_progress", "content": []},
    ),
    responses_event(
        "response.output_text.delta",
        3,
        item_id="msg_1",
        output_index=0,
        content_index=0,
        delta="Hi there, response.completed is just text",
    ),
    responses_event(
        "response.completed",
        4,
        response={**_RESPONSE, "status": "completed", "usage": RESPONSES_USAGE},
    ),
)

GEMINI_CHUNKS = [
    {
        "candidates": [{"content": {"parts": [{"text": "The"}], "role": "model"}, "index": 0}],
        "usageMetadata": {
            "promptTokenCount": 9,
            "totalTokenCount": 9,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 9}],
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "x7ZJaPGxOMmB7M8Pj_TGuQI",
    },
    {
        "candidates": [
            {
                "content": {"parts": [{"text": ' sky is "blue" {}\\ ☀'}], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 9,
            "cachedContentTokenCount": 4,
            "candidatesTokenCount": 12,
            "thoughtsTokenCount": 100,
            "toolUsePromptTokenCount": 2,
            "totalTokenCount": 123,
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "x7ZJaPGxOMmB7M8Pj_TGuQI",
    },
]
GEMINI_USAGE = Usage(
    input_tokens=11,
    output_tokens=112,
    cached_tokens=4,
    reasoning_tokens=100,
    extra={"input_tool_tokens": 2},
)
# alt=sse: Gemini ends its events with CRLF.
GEMINI_SSE = sse(*("data: " + json.dumps(c) for c in GEMINI_CHUNKS), end="\r\n")
# Without alt=sse: one pretty-printed JSON array, objects separated by "\r\n,".
GEMINI_ARRAY = ("[" + "\r\n,".join(json.dumps(c, indent=2) for c in GEMINI_CHUNKS) + "]").encode()

# --- splitting --------------------------------------------------------------------------------


def pieces(data: bytes, how: str) -> list[bytes]:
    """`data` cut the way a network might: whole, byte by byte, or at random points."""
    if how == "whole":
        return [data]
    if how == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    rng = random.Random(how)
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, 12)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


SPLITS = ["whole", "bytes", "random-1", "random-2", "random-3"]


def with_endings(data: bytes, end: bytes) -> bytes:
    """The same SSE stream with every line ending replaced (payloads contain no raw newlines)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", end)


def run(meter: StreamMeter, chunks: list[bytes]) -> bytes:
    out = [meter.feed(c) for c in chunks]
    out.append(meter.close())
    return b"".join(out)


# --- SSEParser --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_sse_parser_same_events_for_any_split_and_line_ending(how, end):
    data = with_endings(ANTHROPIC_STREAM, end)
    parser = SSEParser()
    events = [ev for c in pieces(data, how) for ev in parser.feed(c)] + parser.flush()
    assert [e.event for e in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert json.loads(events[3].data)["delta"]["text"] == "Bonjour à tous ✨"
    # raw is each event's exact bytes: together they are the stream.
    assert b"".join(e.raw for e in events) == data


def test_sse_parser_field_forms():
    data = (
        b"\xef\xbb\xbf: comment at start\n\n"  # BOM, comment-only block: no event
        b"event:custom\ndata:no-space\n\n"  # no space after the colon
        b"data: line1\ndata\ndata: line3\n: inline comment\n\n"  # multi-line data, empty line
        b"id: 7\nretry: 10\ndata: x\n\n"
        b"\n\n"  # stray blank lines
        b"data: unterminated"
    )
    parser = SSEParser()
    events = parser.feed(data)
    assert [(e.event, e.data) for e in events] == [
        ("custom", "no-space"),
        (None, "line1\n\nline3"),
        (None, "x"),
    ]
    assert events[0].raw == b"event:custom\ndata:no-space\n\n"
    (last,) = parser.flush()
    assert (last.event, last.data, last.raw) == (None, "unterminated", b"data: unterminated")
    assert parser.flush() == []


def test_sse_parser_cr_then_lf_in_next_chunk_is_one_line_ending():
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n") == []
    (ev,) = parser.feed(b"\r\ndata: b\r\n\r")
    assert ev.raw == b"data: a\r\n\r\n"
    # A final CR may be half of a CRLF: the event waits for the next byte...
    (ev,) = parser.feed(b"\n")
    assert ev.raw == b"data: b\r\n\r\n"
    # ...and is not delayed further when that byte starts the next event.
    assert parser.feed(b"data: c\r\r") == []
    (ev,) = parser.feed(b"data: d")
    assert ev.raw == b"data: c\r\r"
    (ev,) = parser.flush()
    assert ev.raw == b"data: d"


# --- JSONArrayParser --------------------------------------------------------------------------


@pytest.mark.parametrize("how", [*SPLITS, "random-4", "random-5"])
def test_json_array_parser_any_split(how):
    parser = JSONArrayParser()
    objs = [o for c in pieces(GEMINI_ARRAY, how) for o in parser.feed(c)]
    assert objs == GEMINI_CHUNKS


def test_json_array_parser_escapes_braces_in_strings_and_malformed():
    data = b'[{"t": "a \\\\\\" {[ }"}\n,\r\n{"bad": tru}\n,{"n": {"m": [1, {"k": "}"}]}}\n]'
    parser = JSONArrayParser()
    objs = [o for c in pieces(data, "bytes") for o in parser.feed(c)]
    assert objs == [{"t": 'a \\" {[ }'}, {"n": {"m": [1, {"k": "}"}]}}]
    assert parser.malformed == 1


# --- StreamMeter: identity mode ---------------------------------------------------------------

OPENAI_EXPECTED = Usage(input_tokens=19, output_tokens=10, cached_tokens=3, reasoning_tokens=4)

CASES = [
    ("openai.chat", "sse", CHAT_STREAM, OPENAI_EXPECTED, "gpt-4o-2024-08-06", 6),
    (
        "anthropic.messages",
        "sse",
        ANTHROPIC_STREAM,
        ANTHROPIC_USAGE,
        "claude-sonnet-4-5-20250929",
        7,
    ),
    (
        "openai.responses",
        "sse",
        RESPONSES_STREAM,
        Usage(input_tokens=37, output_tokens=11),
        "gpt-4.1-2025-04-14",
        5,
    ),
    ("google.stream", "sse", GEMINI_SSE, GEMINI_USAGE, "gemini-2.5-flash", 2),
    ("google.stream", "json-array", GEMINI_ARRAY, GEMINI_USAGE, "gemini-2.5-flash", 2),
]


# Each SSE case also with CRLF and CR line endings (a JSON array has no line structure).
CASES += [
    (wire, fmt, with_endings(data, end), *rest)
    for wire, fmt, data, *rest in CASES
    if fmt == "sse"
    for end in (b"\r\n", b"\r")
]


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize(("wire", "fmt", "data", "usage", "model", "chunks"), CASES)
def test_meter_forwards_unchanged_and_meters(wire, fmt, data, usage, model, chunks, how):
    meter = StreamMeter(wire, fmt)
    for c in pieces(data, how):
        assert meter.feed(c) is c  # the very same bytes, at once
    assert meter.close() == b""
    assert meter.usage == usage
    assert meter.usage.raw is not None
    assert meter.model == model
    assert meter.chunks == chunks
    assert meter.error is None
    assert meter.malformed == 0


def test_meter_returns_bytes_for_bytearray_and_memoryview():
    meter = StreamMeter("openai.chat")
    assert meter.feed(bytearray(CHAT_STREAM[:50])) == CHAT_STREAM[:50]
    assert meter.feed(memoryview(CHAT_STREAM[50:])) == CHAT_STREAM[50:]
    assert meter.usage == OPENAI_EXPECTED


def test_meter_unterminated_final_event_is_metered_at_close():
    data = sse(*CHAT_EVENTS) + CHAT_USAGE_EVENT.encode()  # upstream closed without "\n\n"
    meter = StreamMeter("openai.chat")
    assert run(meter, pieces(data, "random-1")) == data
    assert meter.usage == OPENAI_EXPECTED


def test_meter_skips_decoding_plain_deltas():
    meter = StreamMeter("openai.chat")
    meter.feed(sse(CHAT_EVENTS[0]))  # decoded: the model is not known yet
    assert meter.model == "gpt-4o-2024-08-06"
    # Malformed, but with no usage/error marker and the model known, it is never decoded.
    meter.feed(b'data: {"choices": [{"delta": {"content": "x"}}], broken\n\n')
    assert meter.malformed == 0
    assert meter.chunks == 2


# --- Anthropic message_delta forms ------------------------------------------------------------


@pytest.mark.parametrize(
    ("delta_usage", "expected"),
    [
        ({"output_tokens": 15}, ANTHROPIC_USAGE),
        # Current API: message_delta repeats the cumulative input and cache counts.
        (
            {
                "input_tokens": 25,
                "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": 2000,
                "output_tokens": 15,
                "server_tool_use": {"web_search_requests": 1},
            },
            # One web search: two sampling steps, each judged for the long-context tier.
            Usage(
                input_tokens=2125,
                output_tokens=15,
                cached_tokens=2000,
                cache_write_tokens=100,
                extra={"web_searches": 1},
                steps=(
                    Step("message", None, 1063, 8, 1000, 50),
                    Step("message", None, 1062, 7, 1000, 50),
                ),
            ),
        ),
        # Server tools can change the input counts after message_start: the delta's are final,
        # an explicit 0 included.
        (
            {"input_tokens": 900, "cache_read_input_tokens": 0, "output_tokens": 40},
            Usage(input_tokens=1000, output_tokens=40, cached_tokens=0, cache_write_tokens=100),
        ),
        (
            {"output_tokens": 50, "output_tokens_details": {"thinking_tokens": 30}},
            Usage(
                input_tokens=2125,
                output_tokens=50,
                cached_tokens=2000,
                cache_write_tokens=100,
                reasoning_tokens=30,
            ),
        ),
    ],
)
def test_meter_anthropic_message_delta(delta_usage, expected):
    data = anthropic_stream(delta_usage)
    for how in ("whole", "bytes"):
        meter = StreamMeter("anthropic.messages")
        assert run(meter, pieces(data, how)) == data
        assert meter.usage == expected
        assert meter.usage.raw == delta_usage  # the last usage object seen, verbatim


# --- strip mode -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_strip_mode_drops_exactly_the_usage_chunk(how, end):
    data = with_endings(CHAT_STREAM, end)
    expected = with_endings(CHAT_WITHOUT_USAGE, end)
    meter = StreamMeter("openai.chat", strip_usage_chunk=True)
    assert run(meter, pieces(data, how)) == expected
    assert meter.usage == OPENAI_EXPECTED


def test_strip_mode_passes_whole_events_as_they_complete():
    meter = StreamMeter("openai.chat", strip_usage_chunk=True)
    first = sse(CHAT_EVENTS[0])
    assert meter.feed(first[:10]) == b""  # held until the event is complete
    assert meter.feed(first[10:]) == first
    assert meter.feed(sse(CHAT_USAGE_EVENT)) == b""
    assert meter.feed(b"data: [DONE]") == b""
    assert meter.close() == b"data: [DONE]"


def test_strip_mode_keeps_usage_that_rides_on_a_content_chunk():
    # Some OpenAI-compatible servers put usage on the last chunk that still has choices.
    choice = {"index": 0, "delta": {"content": "!"}, "finish_reason": "stop"}
    data = sse("data: " + chunk_json(**_CHAT_HEAD, choices=[choice], usage=OPENAI_USAGE))
    meter = StreamMeter("openai.chat", strip_usage_chunk=True)
    assert run(meter, [data]) == data
    assert meter.usage == OPENAI_EXPECTED


def test_strip_mode_is_identity_for_other_wires():
    meter = StreamMeter("anthropic.messages", strip_usage_chunk=True)
    chunk = ANTHROPIC_STREAM[:33]
    assert meter.feed(chunk) is chunk


def test_legacy_completions_stream():
    head = {"id": "cmpl-1", "object": "text_completion", "model": "gpt-3.5-turbo-instruct"}
    text = {"text": " world", "index": 0, "logprobs": None, "finish_reason": None}
    usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    data = sse(
        "data: " + chunk_json(**head, choices=[text], usage=None),
        "data: " + chunk_json(**head, choices=[], usage=usage),
        "data: [DONE]",
    )
    meter = StreamMeter("openai.completions", strip_usage_chunk=True)
    assert run(meter, pieces(data, "bytes")) == sse(
        "data: " + chunk_json(**head, choices=[text], usage=None), "data: [DONE]"
    )
    assert meter.usage == Usage(input_tokens=5, output_tokens=7)
    assert meter.model == "gpt-3.5-turbo-instruct"


# --- in-stream errors and malformed data ------------------------------------------------------


def test_anthropic_error_event():
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    data = sse(
        "event: message_start\ndata: " + json.dumps(ANTHROPIC_START),
        "event: error\ndata: " + json.dumps(error),
    )
    meter = StreamMeter("anthropic.messages")
    run(meter, pieces(data, "bytes"))
    assert meter.error == error
    assert meter.usage == Usage(
        input_tokens=2125, output_tokens=1, cached_tokens=2000, cache_write_tokens=100
    )


def test_openai_error_chunk():
    error = {"error": {"message": "The server had an error", "type": "server_error"}}
    data = sse(*CHAT_EVENTS[:2], "data: " + json.dumps(error))
    meter = StreamMeter("openai.chat", strip_usage_chunk=True)
    assert run(meter, pieces(data, "random-2")) == data
    assert meter.error == error
    assert meter.usage is None


def test_responses_failed_and_error_events():
    failed = {**_RESPONSE, "status": "failed", "error": {"code": "server_error", "message": "x"}}
    data = sse(
        responses_event("response.created", 0, response=_RESPONSE),
        responses_event("response.failed", 1, response=failed),
    )
    meter = StreamMeter("openai.responses")
    run(meter, [data])
    assert meter.error["type"] == "response.failed"
    assert meter.model == "gpt-4.1-2025-04-14"

    error = {"type": "error", "code": "ERR_SOMETHING", "message": "Something went wrong"}
    meter = StreamMeter("openai.responses")
    run(meter, [sse("event: error\ndata: " + json.dumps(error))])
    assert meter.error == error


def test_responses_incomplete_carries_usage():
    incomplete = {**_RESPONSE, "status": "incomplete", "usage": RESPONSES_USAGE}
    meter = StreamMeter("openai.responses")
    run(meter, [sse(responses_event("response.incomplete", 7, response=incomplete))])
    assert meter.usage == Usage(input_tokens=37, output_tokens=11)
    assert meter.error is None


GEMINI_ERROR = {
    "error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}
}
GEMINI_DATA_ERROR = {
    "error": {"code": 400, "message": "Invalid data: bad part", "status": "INVALID_ARGUMENT"}
}


@pytest.mark.parametrize("how", SPLITS)
def test_gemini_json_array_error(how):
    data = "[" + json.dumps(GEMINI_CHUNKS[0], indent=2) + "\r\n,"
    data = (data + json.dumps(GEMINI_ERROR, indent=2) + "\n]").encode()
    meter = StreamMeter("google.stream", "json-array")
    assert run(meter, pieces(data, how)) == data
    assert meter.error == GEMINI_ERROR
    assert meter.usage == Usage(input_tokens=9)


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("error", [GEMINI_ERROR, GEMINI_DATA_ERROR])
def test_gemini_sse_error_as_bare_json_lines(how, error):
    # Mid-stream, Google writes the error as plain pretty-printed JSON, without "data:".
    data = sse("data: " + json.dumps(GEMINI_CHUNKS[0]), end="\r\n")
    data += json.dumps(error, indent=2).encode() + b"\n"
    meter = StreamMeter("google.stream", "sse")
    assert run(meter, pieces(data, how)) == data
    assert meter.error == error
    assert meter.usage == Usage(input_tokens=9)


def test_gemini_sse_error_event():
    data = sse("data: " + json.dumps(GEMINI_ERROR), end="\r\n")
    meter = StreamMeter("google.stream")
    run(meter, [data])
    assert meter.error == GEMINI_ERROR


@pytest.mark.parametrize(
    ("wire", "bad"),
    [
        ("openai.chat", b'data: {"choices": [], "usage": {"prompt_tokens": 1,\n\n'),
        ("openai.chat", b'data: {"error": \xff\xfe}\n\n'),
        ("anthropic.messages", b"event: message_delta\ndata: {nope}\n\n"),
        ("openai.responses", b"event: response.completed\ndata: [1, 2]\n\n"),
        ("google.stream", b'data: {"usageMetadata": {"promptTokenCount": }\r\n\r\n'),
    ],
)
def test_malformed_json_is_counted_not_raised(wire, bad):
    good = {
        "openai.chat": CHAT_STREAM,
        "anthropic.messages": ANTHROPIC_STREAM,
        "openai.responses": RESPONSES_STREAM,
        "google.stream": GEMINI_SSE,
    }[wire]
    meter = StreamMeter(wire)
    data = bad + good
    assert run(meter, pieces(data, "bytes")) == data
    assert meter.malformed == 1
    assert meter.usage is not None and meter.usage.input_tokens > 0


def test_meter_tolerates_garbage_between_events():
    data = b": keep-alive\n\nretry: 3000\n\n" + CHAT_STREAM + b"\n\n: bye"
    meter = StreamMeter("openai.chat", strip_usage_chunk=True)
    out = run(meter, pieces(data, "bytes"))
    assert out == data.replace(sse(CHAT_USAGE_EVENT), b"")
    assert meter.usage == OPENAI_EXPECTED


# --- ensure_stream_usage ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "body", "stripped", "after"),
    [
        (
            "openai.chat",
            {"model": "gpt-4o", "stream": True},
            True,
            {"include_usage": True},
        ),
        (
            "openai.chat",
            {"stream": True, "stream_options": {"include_obfuscation": False}},
            True,
            {"include_obfuscation": False, "include_usage": True},
        ),
        (
            "openai.completions",
            {"stream": True, "stream_options": {"include_usage": False}},
            True,
            {"include_usage": True},
        ),
        (
            "openai.chat",
            {"stream": True, "stream_options": {"include_usage": True}},
            False,
            {"include_usage": True},
        ),
        ("openai.chat", {"stream": False}, False, None),  # stream_options needs stream=true
        ("openai.responses", {"stream": True}, False, None),
        ("anthropic.messages", {"stream": True}, False, None),
        ("google.stream", {}, False, None),
    ],
)
def test_ensure_stream_usage(wire, body, stripped, after):
    assert ensure_stream_usage(wire, body) is stripped
    assert body.get("stream_options") == after


# --- agreement with the OpenAI SDK's own decoder ----------------------------------------------


def random_stream(rng: random.Random) -> bytes:
    """An SSE stream mixing every line ending, comments, fields and multi-line data."""
    lines = []
    for _ in range(rng.randint(1, 8)):
        for _ in range(rng.randint(0, 4)):
            lines.append(
                rng.choice(
                    [
                        "data: " + json.dumps({"t": rng.choice(["é", "👋", "a\\nb", ":"])}),
                        "data:" + rng.choice(["", "x", " y", "[DONE]"]),
                        "data",
                        "event: " + rng.choice(["ping", "message_delta", "error"]),
                        ": comment",
                        "unknown: field",
                    ]
                )
            )
        lines.append("")
    ends = ["\n", "\r\n", "\r"]
    return "".join(line + rng.choice(ends) for line in lines).encode()


@pytest.mark.parametrize("seed", range(40))
def test_sse_parser_agrees_with_openai_sdk_decoder(seed):
    streaming = pytest.importorskip("openai._streaming")
    rng = random.Random(seed)
    data = random_stream(rng)
    # A trailing lone CR may still become CRLF for us; the SDK decides at once. Both agree
    # once the stream ends with a definite line ending.
    data += b"\n"
    sdk = [(e.event, e.data) for e in streaming.SSEDecoder().iter_bytes(iter([data]))]
    parser = SSEParser()
    ours = [(e.event, e.data) for c in pieces(data, "bytes") for e in parser.feed(c)]
    ours += [(e.event, e.data) for e in parser.flush()]
    assert ours == sdk


# --- big events: only their ends are searched, Gemini chunks decoded from the usage on ------

BIG_TEXT = "lorem ipsum " * 5000  # 60 KB of content in one event


def big_gemini_chunk() -> dict:
    image = {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo" * 150_000}}
    chunk = dict(GEMINI_CHUNKS[1])
    chunk["candidates"] = [{"content": {"parts": [image], "role": "model"}, "index": 0}]
    return chunk


@pytest.mark.parametrize("fmt", ["sse", "json-array"])
@pytest.mark.parametrize("sort_keys", [False, True])
def test_gemini_megabyte_image_chunk(fmt, sort_keys):
    chunk = big_gemini_chunk()
    text = json.dumps(chunk, sort_keys=sort_keys)
    data = sse("data: " + text, end="\r\n") if fmt == "sse" else f"[{text}]".encode()
    meter = StreamMeter("google.stream", fmt)
    assert run(meter, [data[i : i + 65536] for i in range(0, len(data), 65536)]) == data
    assert meter.usage == GEMINI_USAGE
    assert meter.model == "gemini-2.5-flash"


def test_gemini_usage_before_candidates_still_decoded():
    chunk = {"usageMetadata": GEMINI_CHUNKS[1]["usageMetadata"], **GEMINI_CHUNKS[1]}
    meter = StreamMeter("google.stream")
    run(meter, [sse("data: " + json.dumps(chunk))])
    assert meter.usage == GEMINI_USAGE


def test_gemini_nested_usage_key_falls_back_to_a_full_decode():
    chunk = {
        "candidates": [{"content": {"parts": [{"functionCall": {"args": {"usageMetadata": {}}}}]}}],
    }
    meter = StreamMeter("google.stream", "json-array")
    run(meter, [json.dumps([chunk, GEMINI_CHUNKS[1]]).encode()])
    assert meter.usage == GEMINI_USAGE
    assert meter.malformed == 0


def test_big_responses_event_with_type_last_and_no_event_line():
    done = {**_RESPONSE, "status": "completed", "usage": RESPONSES_USAGE}
    done["output"] = [{"type": "message", "content": [{"type": "output_text", "text": BIG_TEXT}]}]
    event = {"type": "response.completed", "sequence_number": 9, "response": done}
    data = sse("data: " + json.dumps(event, sort_keys=True))
    meter = StreamMeter("openai.responses")
    assert run(meter, pieces(data, "random-3")) == data
    assert meter.usage == Usage(input_tokens=37, output_tokens=11)
