"""Fixtures for every test: a clean, deterministic environment."""

from __future__ import annotations

import pytest

# Variables the CLI and provenance read; a developer's or CI's settings must not leak into tests.
_ENV = ("MULTIBAKE_REGISTRY", "MULTIBAKE_CONFIG", "MULTIBAKE_DEBUG", "SOURCE_DATE_EPOCH")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
