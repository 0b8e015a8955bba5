"""Responder's service: the kernel, the registry, and the top of the process.

Inside ``app``: ``app.core`` (the kernel every layer stands on), ``app.registry``
(who can be alerted), and the top layer (``app.api``, the HTTP layer; ``app.cli``;
``app.runtime``, the process wiring; ``app.embedded``, ``app.migrate``,
``app.logging``). ``dispatch`` sits between the top and the registry; the import
contract is in ``pyproject.toml`` and docs/architecture.md. Importing ``app``
imports nothing heavy.
"""
