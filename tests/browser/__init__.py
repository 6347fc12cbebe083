"""The browser phone in headless Chromium.

A package, so that its conftest.py does not shadow tests/conftest.py for ``import conftest``.
"""
