"""The upstream of the proxy benchmark: nginx answering with fixed OpenAI bodies.

nginx (one worker, access log off) answers `POST /v1/chat/completions` with a
realistic `chat.completion` JSON, and `POST /sse/v1/chat/completions` with the
`text/event-stream` OpenAI sends for the same call with `"stream": true` and
`stream_options.include_usage` (role chunk, seven content deltas, the finish chunk,
the usage chunk, `data: [DONE]`). `/sim/v1/chat/completions` passes the call on to
the simulated provider (`python -m lcm_jupyter.testing --latency ...`), for a point
with a realistic upstream latency.

A proxy has one base URL per provider, so a request header picks the body:
`X-Bench-Route: sse` or `sim` sends `/v1/chat/completions` to those locations (a
`rewrite ... last` inside `if`, one of the uses nginx documents as safe). The proxy
forwards that header like any other; LiteLLM does not forward client headers, so
its config gives each body its own model name with its own `api_base` instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

MODEL = "gpt-4o-mini"
ANSWER_MODEL = "gpt-4o-mini-2024-07-18"
USAGE = {
    "prompt_tokens": 26,
    "completion_tokens": 7,
    "total_tokens": 33,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
_ID, _CREATED, _FINGERPRINT = "chatcmpl-BENCH0000000000000000000001", 1735689600, "fp_bench00000"
_PIECES = ["Hello", " there", ",", " how", " are", " you", "?"]  # 7 completion tokens

_compact = {"separators": (",", ":")}


def request_body(
    *, stream: bool, model: str = MODEL, user: str = "Say hello in five words."
) -> str:
    """The chat request every client sends (180 bytes; `stream` adds `"stream":true`)."""
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": user},
        ],
        "max_tokens": 32,
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, **_compact)


# What api.openai.com answers to the request above (fixed id and timestamp).
JSON_RESPONSE = json.dumps(
    {
        "id": _ID,
        "object": "chat.completion",
        "created": _CREATED,
        "model": ANSWER_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "".join(_PIECES),
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
        "service_tier": "default",
        "system_fingerprint": _FINGERPRINT,
    },
    **_compact,
)


def _chunk(choices: list, usage: dict | None) -> str:
    chunk = {
        "id": _ID,
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": ANSWER_MODEL,
        "service_tier": "default",
        "system_fingerprint": _FINGERPRINT,
        "choices": choices,
        "usage": usage,  # null in every chunk but the last once include_usage is on
    }
    return "data: " + json.dumps(chunk, **_compact) + "\n\n"


def _delta(delta: dict, finish: str | None = None) -> list:
    return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]


# The same answer as OpenAI streams it with stream_options.include_usage.
SSE_RESPONSE = (
    _chunk(_delta({"role": "assistant", "content": "", "refusal": None}), None)
    + "".join(_chunk(_delta({"content": p}), None) for p in _PIECES)
    + _chunk(_delta({}, "stop"), None)
    + _chunk([], USAGE)
    + "data: [DONE]\n\n"
)

NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-client-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    server_tokens off;

    upstream sim {{
        server 127.0.0.1:{sim_port};
        keepalive 256;
    }}

    server {{
        listen 127.0.0.1:{port};
        location = /v1/chat/completions {{
            if ($http_x_bench_route = "sse") {{
                rewrite ^ /sse/v1/chat/completions last;
            }}
            if ($http_x_bench_route = "sim") {{
                rewrite ^ /sim/v1/chat/completions last;
            }}
            default_type application/json;
            return 200 '{json}';
        }}
        location = /sse/v1/chat/completions {{
            default_type text/event-stream;
            return 200 '{sse}';
        }}
        location = /sim/v1/chat/completions {{
            proxy_pass http://sim/v1/chat/completions;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""


def _nginx_quoted(text: str) -> str:
    """`text` for nginx's `return 200 '...'`: newlines as \\n; no quote, backslash or `$`."""
    if any(c in text for c in "'\\$"):
        raise ValueError("the body must not hold a single quote, a backslash or a '$'")
    return text.replace("\n", "\\n")


def start_nginx(
    nginx: str, tmp: Path, port: int, sim_port: int, pin: Callable[[], None] | None
) -> subprocess.Popen:
    """nginx in the foreground from a config in `tmp`; answers once it returns."""
    conf = tmp / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            tmp=tmp,
            port=port,
            sim_port=sim_port,
            json=_nginx_quoted(JSON_RESPONSE),
            sse=_nginx_quoted(SSE_RESPONSE),
        )
    )
    cmd = [nginx, "-p", str(tmp), "-e", str(tmp / "nginx-error.log"), "-c", str(conf)]
    check = subprocess.run([*cmd, "-t"], capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(f"nginx rejected its config:\n{check.stderr}")
    with open(tmp / "nginx-stderr.log", "wb") as err:  # the child keeps its own copy
        return subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=pin
        )


def start_sim(
    tmp: Path, port: int, latency: float, pin: Callable[[], None] | None
) -> subprocess.Popen:
    """The simulated provider, answering after `latency` seconds."""
    with open(tmp / "sim.log", "wb") as log:
        cmd = [sys.executable, "-m", "lcm_jupyter.testing", "--port", str(port)]
        return subprocess.Popen(
            [*cmd, "--latency", f"{latency:g}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=pin,
        )
