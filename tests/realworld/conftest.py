"""Gate for the long real-world suites.

Tests marked ``realworld`` run only when CFIGUARD_REALWORLD=1 is set (select them with ``-m realworld``);
otherwise they are skipped with the reason below. Unmarked tests in this folder are the fast part that CI
runs by default. Commands and knobs: docs/realworld.md.
"""

from __future__ import annotations

import pytest
from rw_support import REALWORLD_ENV, realworld_enabled

SKIP_REASON = (
    f"long real-world suite: set {REALWORLD_ENV}=1 and select it with -m realworld (see docs/realworld.md)"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if realworld_enabled():
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.get_closest_marker("realworld") is not None:
            item.add_marker(skip)
