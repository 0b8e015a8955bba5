"""The volunteer registry: volunteers, certifications, places, live locations, AEDs.

Services take a session and typed arguments, ``flush()`` and never commit; every
administrative change writes its audit row in the same transaction.
"""
