"""One registry type for every kind of thing a config names by a word: similarities and rules
(`featureflow/modes.py`), evidence kinds (`featureflow/evidence/`), SAE architectures (`featureflow/saes/`) and
merge methods (`featureflow/merges/`). Each kind keeps its own `Registry` and its own checks on what it accepts;
the registry holds the entries in registration order, refuses a name twice and answers an unknown name with the
names it has. Imports nothing."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(dict, Generic[T]):
    """name -> entry of one `kind` ('similarity', 'merge method', ...), in registration order (a dict)."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def add(self, name: str, entry: T) -> T:
        """Register `entry` as `name` and return it; a name already taken is a ValueError."""
        if not name:
            raise ValueError(f"a {self.kind} needs a name ({entry!r})")
        if name in self:
            raise ValueError(f"{self.kind} '{name}' is already registered ({self[name]!r})")
        self[name] = entry
        return entry

    def remove(self, name: str) -> None:
        """Forget `name` (a test's toy entry cleans up with it); an unknown name is ignored."""
        self.pop(name, None)

    def lookup(self, name: str) -> T:
        """The entry registered as `name`; an unknown name is a ValueError listing the registered ones."""
        try:
            return self[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} '{name}' (registered: {', '.join(self) or 'none'})") from None

    def names(self) -> list[str]:
        return list(self)
