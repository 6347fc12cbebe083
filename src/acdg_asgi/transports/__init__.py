"""Internal: the sockets, by peer. Bytes in and out; no call logic.

    vaic_asgi.py         VAIC's socket as a plain ASGI WebSocket
    vaic_direct.py       uvicorn's WebSocket protocol with the bridge's direct path
    agent_base.py        the agent connector and connection interfaces
    agent_lean.py        the default agent client: an asyncio Protocol, frames by hand
    agent_websockets.py  an agent client on the ``websockets`` library
    wsframe.py           RFC 6455 frame headers, for the two hand-written paths
    redact.py            credential headers kept out of third-party debug logs
"""
