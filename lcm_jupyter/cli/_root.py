"""`jupyter lcm` itself: its subcommands."""

from __future__ import annotations

from ._base import LCMCommand, subcommands
from ._db import DbApp
from ._demo import DemoApp
from ._keys import KeysApp
from ._pricing import PricingApp
from ._remote import ReconcileApp, ReportApp


class LCMApp(LCMCommand):
    """`jupyter lcm`."""

    name = "jupyter-lcm"
    description = (
        "The LLM cost manager from a terminal: the offline demo, proxy keys and prices in the "
        "server's database (as configured for the server: jupyter_server_config.py, LCM_*), "
        "and reports from a running server."
    )
    examples = """
jupyter lcm demo
jupyter lcm keys create team-a --provider-key openai=sk-... --budget 50
jupyter lcm keys list
jupyter lcm pricing --provider anthropic
jupyter lcm report --period 7d --by key
jupyter lcm db migrate --to postgresql://user:password@host/lcm   # SQLite to PostgreSQL
jupyter lcm --help-all          # every option, LCMExtension's with its LCM_* variable
"""
    subcommands = subcommands(
        demo=DemoApp,
        keys=KeysApp,
        pricing=PricingApp,
        reconcile=ReconcileApp,
        report=ReportApp,
        db=DbApp,
    )
