"""The fault suite (issue 12): real servers, a real Redis and real clients under faults.

Run with `python -m tests.chaos.run [scenario ...] [--quick]`; see tests/chaos/README.md.
Not collected by pytest (no `test_*.py` file here): it takes minutes and prints figures.
"""
