"""Counting what SQLAlchemy does per execution, for tests of statements built once."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from unittest.mock import patch

import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.cache_key import HasCacheKey

from app.core.db import SessionQuery


def count_cache_keys(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-element counter of the statement cache keys SQLAlchemy computes."""
    computed = [0]
    compute: Callable[[Any], Any] = HasCacheKey._generate_cache_key

    def counting(element: Any) -> Any:
        computed[0] += 1
        return compute(element)

    monkeypatch.setattr(HasCacheKey, "_generate_cache_key", counting)
    return computed


@contextmanager
def with_session_queries(sent: list[str], words: int = 3) -> Iterator[list[str]]:
    """Also note in ``sent`` the statements run on a transaction's driver connection
    (``app.core.db.SessionQuery``), which SQLAlchemy's cursor events never see: the
    first ``words`` of each, once it has run."""
    original = SessionQuery.fetch

    async def fetch(
        query: SessionQuery, session: AsyncSession, parameters: Mapping[str, Any]
    ) -> list[Mapping[str, Any]]:
        rows = await original(query, session, parameters)
        sent.append(" ".join(query.sql.split()[:words]))
        return rows

    with patch.object(SessionQuery, "fetch", fetch):
        yield sent
