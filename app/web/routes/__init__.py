"""One module per page group; ``ROUTERS`` is what the console installs."""

from app.web.routes import account, admin, aftercare, incidents, me, registry, sso

ROUTERS = [
    account.router,
    sso.router,
    incidents.router,
    admin.router,
    registry.router,
    aftercare.router,
    me.router,
]
