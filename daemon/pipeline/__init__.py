"""The pipeline package: `core` polls, decodes and routes; the handler modules (capture health,
intent, tool control through its port) receive the event classes they registered for."""

from vigild.daemon.pipeline.core import ExtraSensor, Pipeline, Sink

__all__ = ["ExtraSensor", "Pipeline", "Sink"]
