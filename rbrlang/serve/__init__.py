"""`rbrc serve`: a compiled policy as a reward server for OpenRLHF (its remote
reward protocol), batching concurrent requests into grader batches.
Needs the `serve` extra (starlette, uvicorn): `pip install 'rbrlang[serve]'`."""
from __future__ import annotations


def create_app(reward, **kwargs):
    """See `rbrlang.serve.app.create_app` (imported here lazily: starlette is an extra)."""
    from .app import create_app as _create_app

    return _create_app(reward, **kwargs)


def server(app, host: str = "127.0.0.1", port: int = 5000, log_level: str = "info", **options):
    """A uvicorn `Server` for `app`: `server.run()` blocks; `server.should_exit = True`
    shuts it down gracefully (requests in flight finish). `options` go to `uvicorn.Config`."""
    import uvicorn

    # One process, one event loop: the grader is one model on one device.
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, workers=1, lifespan="on",
                            timeout_graceful_shutdown=600, **options)
    return uvicorn.Server(config)
