"""Counting what SQLAlchemy does per execution, for tests of statements built once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.sql.cache_key import HasCacheKey


def count_cache_keys(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-element counter of the statement cache keys SQLAlchemy computes."""
    computed = [0]
    compute: Callable[[Any], Any] = HasCacheKey._generate_cache_key

    def counting(element: Any) -> Any:
        computed[0] += 1
        return compute(element)

    monkeypatch.setattr(HasCacheKey, "_generate_cache_key", counting)
    return computed
