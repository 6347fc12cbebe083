"""Call state shared between instances, and control of a call from anywhere.

    cluster.py   call ownership, shared history, commands between instances
    control.py   ``bridge.control(conversation_id)``
    store/       the shared store (Redis)
"""
