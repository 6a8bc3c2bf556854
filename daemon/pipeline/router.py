"""Routing: handlers register for the event classes they need; an event reaches only those.

The lookup is by the event's concrete class, resolved against the registered classes once
(subclasses included) and cached, so a kind no handler wants costs one dict lookup."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Handler = Callable[[Any], None]


class Router:
    def __init__(self) -> None:
        self._registered: list[tuple[tuple[type, ...], Handler]] = []
        self._by_class: dict[type, tuple[Handler, ...]] = {}
        self._on_change: list[Callable[[], None]] = []

    def register(self, classes: tuple[type, ...], handler: Handler) -> None:
        """`handler` receives every event that is an instance of one of `classes`, in order of
        registration."""
        self._registered.append((classes, handler))
        self._by_class.clear()
        for changed in self._on_change:
            changed()

    def on_change(self, changed: Callable[[], None]) -> None:
        """Call `changed` whenever a handler is registered (whoever cached what `handlers`
        answered forgets it)."""
        self._on_change.append(changed)

    def handlers(self, cls: type) -> tuple[Handler, ...]:
        found = self._by_class.get(cls)
        if found is None:
            found = tuple(handler for classes, handler in self._registered if issubclass(cls, classes))
            self._by_class[cls] = found
        return found

    def route(self, event: Any) -> None:
        for handler in self.handlers(type(event)):
            handler(event)
