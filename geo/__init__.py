"""Every spatial rule and every ST_* expression: points, radius search, nearest, areas.

Nothing here imports FastAPI; functions take a session or column expressions and
typed arguments. Distances are geodesic on the WGS84 spheroid unless a name says
otherwise (``<->`` on geography is spherical and used only to order).
"""
