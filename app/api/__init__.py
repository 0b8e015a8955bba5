"""The HTTP layer: ``create_app``, routers, request and response schemas, request
dependencies, authentication of requests, problem+json rendering and rate limits.

It translates HTTP to calls of the domain services (``dispatch``, ``app.registry``)
and their results back to JSON; no business rule lives here.
"""
