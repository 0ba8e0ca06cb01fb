"""Warm-up: ask the model server to load every model at start, in the background."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from ..errors import UpstreamError
from ..providers.base import Provider
from .logs import printable

log = logging.getLogger("piagent")


def start_warmup(provider: Provider, models: Iterable[str]) -> threading.Thread:
    """Load each model in a background thread (a greenlet under gevent); failures only log."""
    names = list(models)

    def run() -> None:
        for model in names:
            try:
                provider.load_model(model)
            except UpstreamError as exc:
                log.warning("warm-up: model %s was not loaded: %s", model, printable(exc.detail))
            except Exception:
                log.exception("warm-up: model %s was not loaded", model)
            else:
                log.info("warm-up: model %s is loaded", model)

    thread = threading.Thread(target=run, name="piagent-warmup", daemon=True)
    thread.start()
    return thread
