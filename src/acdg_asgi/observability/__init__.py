"""What operators see: the observer interface, Prometheus metrics, OpenTelemetry traces
and the logs.

    observer.py   who watches calls, and the read-only view of a call they get
    metrics.py    Prometheus (``pip install 'acdg-asgi[metrics]'``)
    tracing.py    OpenTelemetry spans (``pip install 'acdg-asgi[otel]'``)
    logs.py       the per-call logger, and text or JSON log output
"""
