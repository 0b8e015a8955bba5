"""The alerting engine: who gets alerted, alert state, roles, SMS gateways, replies, worker.

Nothing here imports FastAPI or Starlette: functions take a session and typed
arguments and raise the errors of ``app.core.errors``.
"""
