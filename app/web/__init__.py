"""The staff console: server-rendered pages on the same domain services as the JSON API.

A route validates a form, calls a service of ``dispatch`` or ``app.registry`` and
renders a template; no SQL and no business rule lives here (docs/console.md).
"""
