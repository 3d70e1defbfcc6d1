"""Things looked up by name: the one way the library maps a param's value to what it names.

A ``Registry`` holds one kind of thing (objectives, datasets, concept sources, ...)
in registration order, which is the order of the param's choices. An unknown name
raises the kind's own error, naming the param, the valid names and the closest one.
"""

from __future__ import annotations

import difflib
from typing import Callable, Dict, Generic, Iterator, Tuple, Type, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, param: str, error: Type[Exception] = ValueError):
        self.param = param  # how a user names the choice, e.g. "loss" or "concepts.source"
        self.error = error
        self._items: Dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.param} {name!r} is registered twice")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of ``add``."""
        return lambda item: self.add(name, item)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise self.error(self.unknown(name)) from None

    def unknown(self, name: object) -> str:
        close = difflib.get_close_matches(str(name), list(self._items), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.param} {name!r}{hint}; use one of: {', '.join(self._items)}."

    def names(self) -> Tuple[str, ...]:
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self):
        return self._items.items()

    def values(self):
        return self._items.values()

