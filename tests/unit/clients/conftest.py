"""Client tests read secrets such as "x" from env files; forget them after each test, or the
scrubber (which masks even short secrets as whole tokens) would mask them in later output."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.secrets import REGISTRY


@pytest.fixture(autouse=True)
def forget_secrets() -> Iterator[None]:
    yield
    REGISTRY.clear()
