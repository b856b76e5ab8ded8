"""Shared inputs of the Spark tests: ``spark``, ``sample_dataset`` and ``pipeline`` (the small trained
model) are in tests/conftest.py, shared with the browser tests."""
from __future__ import annotations

from tests.conftest import SMALL_MODEL  # noqa: F401 - the layer sizes the Spark tests train with
