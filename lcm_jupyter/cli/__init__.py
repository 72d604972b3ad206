"""`jupyter lcm`: the demo, proxy keys, prices, and reports from a running server.

A `jupyter_core` application with a subcommand each (`jupyter lcm --help-all`). Every
command reads the configuration the server reads (its config files and the `LCM_*`
variables: `_base.py`), so it acts on the server's database; those that ask a running
server find it as `jupyter server list` does (`_remote.py`). A mistake is one line on
stderr with the fix, never a traceback.

    jupyter lcm demo [--no-history] [--check]
    jupyter lcm keys [list] | create NAME [--provider-key openai=sk-...] | revoke ID
    jupyter lcm pricing [list] [--provider P] [--model GLOB] | update [--from FILE|URL]
    jupyter lcm reconcile [--key ID] [--url URL] [--token TOKEN]
    jupyter lcm db [status] | migrate [--to postgresql://...]
    jupyter lcm report [--period 30d] [--by model|provider|key|user|notebook] [--format ...]
"""

from __future__ import annotations

import os
import sys

from ._text import (
    REPORT_BY,
    REPORT_COLUMNS,
    REPORT_FORMATS,
    TOTAL_FIELDS,
    cell,
    reconcile_lines,
    report_totals,
    shadow_lines,
    text_table,
    totals_line,
)

__all__ = [
    "REPORT_BY",
    "REPORT_COLUMNS",
    "REPORT_FORMATS",
    "TOTAL_FIELDS",
    "cell",
    "main",
    "reconcile_lines",
    "report_totals",
    "shadow_lines",
    "text_table",
    "totals_line",
]


def main(argv: list[str] | None = None) -> int:
    """Entry point of `jupyter lcm` (the `jupyter-lcm` script): the exit code.

    A usage error raises SystemExit(2) after its line, as argparse does; a command that
    fails returns 1 after its line.
    """
    from traitlets import TraitError

    from ._base import CommandError, UsageError, cli_error
    from ._root import LCMApp

    app = LCMApp()
    try:
        app.initialize(argv)
        command = app
        while command.subapp is not None:
            command = command.subapp
        return command.start() or 0
    except UsageError as err:
        cli_error(str(err))
        raise SystemExit(2) from None
    except (CommandError, TraitError) as err:
        cli_error(str(err))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `jupyter lcm --help-all | head`: the reader left, no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def __getattr__(name: str):
    # What tests and benchmarks import from here; each module is imported on first use.
    if name in ("_create_key",):
        from . import _keys

        return getattr(_keys, name)
    if name in ("_seed_demo_history", "_dashboard_notebook", "DEMO_PROVIDER_KEY"):
        from . import _demo

        return getattr(_demo, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(main())
