"""Load the models to serve and run uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from maas.engine.engine import EngineConfig
from maas.engine.process_engine import ProcessEngine
from maas.server.app import create_app
from maas.server.state import ServedModel
from maas.store.builtin import resolve

log = logging.getLogger("maas.server")


def load_llm(name_or_path: str, config: EngineConfig, served_name: str | None = None) -> ServedModel:
    """Resolve a model name or path, load it, and start its engine loop."""
    name, path = resolve(name_or_path)
    return ServedModel(served_name or name, "llm", ProcessEngine(path, config))


def serve(models: list[ServedModel], host: str, port: int, log_level: str = "info") -> None:
    """Serve already-loaded models until interrupted."""
    app = create_app(lambda: models)
    log.info("listening on http://%s:%d (docs at /docs)", host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
