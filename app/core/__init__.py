"""The kernel every layer shares: ORM models, engine and unit of work, settings, the
error hierarchy, the clock, weekly-schedule ranges, the outbox and the message
catalogue.

It imports nothing from the rest of the project and nothing from FastAPI or
Starlette, so ``dispatch``, the registry, ``geo`` and the HTTP layer can all stand
on it.
"""
