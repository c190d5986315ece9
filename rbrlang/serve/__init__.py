"""`rbrc serve`: a compiled policy as a reward server for OpenRLHF (its remote
reward protocol), batching concurrent requests into grader batches.
Needs the `serve` extra (starlette, uvicorn): `pip install 'rbrlang[serve]'`."""
from __future__ import annotations


def create_app(reward, **kwargs):
    """See `rbrlang.serve.app.create_app` (imported here lazily: starlette is an extra)."""
    from .app import create_app as _create_app

    return _create_app(reward, **kwargs)


GRACE_S = 30.0  # the first Ctrl-C or SIGTERM: this long for requests in flight, then they are cancelled


def server(app, host: str = "127.0.0.1", port: int = 5000, log_level: str = "info", grace_s: float = GRACE_S,
           **options):
    """A uvicorn `Server` for `app`: `server.run()` blocks; `server.should_exit = True`
    (or the first SIGINT/SIGTERM) shuts it down gracefully: no new connections,
    requests in flight finish for at most `grace_s` seconds, then are cancelled;
    the batch being scored then finishes and the process can exit. The server's
    `stopped_by` is the signal that stopped it (None: none did). `options` go to
    `uvicorn.Config`."""
    import uvicorn

    class Server(uvicorn.Server):
        stopped_by = None

        def handle_exit(self, sig, frame) -> None:
            if self.stopped_by is None:
                self.stopped_by = sig
            super().handle_exit(sig, frame)

    # One process, one event loop: the grader is one model on one device.
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, workers=1, lifespan="on",
                            timeout_graceful_shutdown=max(0.0, float(grace_s)), **options)
    return Server(config)
