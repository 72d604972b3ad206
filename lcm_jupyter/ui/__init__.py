"""Notebook widgets (ipywidgets 8 + bqplot) over the extension's REST API.

    from lcm_jupyter.ui import Dashboard
    Dashboard()

Needs the `ui` extra: `pip install "lcm-jupyter[ui]"`.
"""

from .dashboard import Dashboard
from .keyform import ProxyKeyForm
from .logtable import ProxyLogTable
from .pricing_table import PricingTable
from .rules import RoutingRulesEditor
from .team import TeamView

__all__ = [
    "Dashboard",
    "PricingTable",
    "ProxyKeyForm",
    "ProxyLogTable",
    "RoutingRulesEditor",
    "TeamView",
]
