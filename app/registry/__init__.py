"""The volunteer registry: volunteers, certifications, places, live locations, AEDs,
audit, import parsing, phones, the eligibility rule and API keys.

Services take a session and typed arguments (keyword arguments, small frozen
dataclasses), ``flush()`` and never commit, and return ORM rows or dataclasses; every
administrative change writes its audit row in the same transaction. Nothing here
imports FastAPI, Starlette or ``app.api``: the routers translate.
"""
