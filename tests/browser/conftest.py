"""Browser tests: select them with ``-m browser`` (or leave them out with ``-m 'not browser'``)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: runs the browser phone in headless Chromium")
