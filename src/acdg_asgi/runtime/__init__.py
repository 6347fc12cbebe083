"""Internal: one call's I/O around its :class:`~acdg_asgi.call.Call`.

    call_runtime.py   the task group per call, the flush, the clock task
    readers.py        both sockets' frames into the call
    app_events.py     the application's handlers, and events to them through a bounded queue
    scheduler.py      one timer per event loop for every call's deadlines
    mailbox.py        what callbacks hand to one of the call's tasks, in order
    deps.py           what a bridge lends each of its calls
"""
