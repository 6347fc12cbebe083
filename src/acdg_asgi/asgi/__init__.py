"""Internal: the ASGI surface of :class:`~acdg_asgi.app.BridgeApp`.

    registry.py    the calls of one bridge, by conversation id, and whether it drains
    admission.py   a WebSocket from the upgrade to a call (auth, initiate, resume)
    routes.py      the plain HTTP side: probe, readiness, metrics, the control route
    responses.py   ASGI helpers: the path below the mount, responses, refused upgrades
"""
