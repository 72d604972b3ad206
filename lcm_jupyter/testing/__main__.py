"""Run the simulated provider as a process: `python -m lcm_jupyter.testing --port 8765`.

Prints the base URL on stdout once it listens, then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from .simulator import SimulatedProvider


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lcm_jupyter.testing",
        description="Serve a simulated OpenAI / Anthropic / Gemini API for tests and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before headers")
    parser.add_argument(
        "--chunk-delay", type=float, default=0.0, help="seconds between stream frames"
    )
    parser.add_argument("--stream-chunks", type=int, default=4, help="text deltas per stream")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        help="accept only this key (repeatable); any key is accepted when omitted",
    )
    return parser


async def serve(args: argparse.Namespace) -> None:
    """Start the simulator, print its URL and serve until a termination signal."""
    sim = SimulatedProvider(
        host=args.host,
        port=args.port,
        latency=args.latency,
        chunk_delay=args.chunk_delay,
        stream_chunks=args.stream_chunks,
        api_keys=args.api_keys,
    )
    await sim.start()
    # Parent processes read this line to learn the port, so flush it right away.
    print(sim.url, flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stopping.set)
        except (NotImplementedError, RuntimeError):  # Windows: no loop signal handlers
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stopping.set))
    try:
        await stopping.wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = _parser().parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
