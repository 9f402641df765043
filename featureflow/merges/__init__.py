"""Merge methods: one registered `MergeMethod` per file (`slerp.py`, `linear.py`, `ties.py`).

A method maps featureflow's name for a merge of two parents at t (t = 0 is `parents[0]`'s side, t = 1 is
`parents[1]`'s) onto one of mergekit's own merge methods (`mergekit.merge_methods.registry`): it says its label,
whether it takes a base model and a density, and builds the mergekit configuration (what `mergekit-yaml` reads)
at a t. mergekit's pipeline (`mergekit.merge.run_merge`) runs it; `check_mergekit` validates the method it
names against mergekit's registry rather than keeping a list of its own. `MergeMember.method` in a config takes
any registered name.

Adding one is one new file holding a subclass and a `register(...)` call (README, "Extending featureflow").
Importing this package imports neither torch nor mergekit.
"""

from __future__ import annotations

from typing import Any

from featureflow.registry import Registry

_REGISTRY: Registry["MergeMethod"] = Registry("merge method")

Ref = Any  # a model reference in mergekit's YAML: a path string, or {"model": {"path": ...}}


class MergeMethod:
    """One merge method. Subclass it in its own file, set the class attributes, write `mergekit_config`, and
    `register` an instance."""

    name: str = ""              # what `method:` names it by
    label: str = ""             # what the explorer and the logs call it ("SLERP", "linear merge", ...)
    description: str = ""       # one line for the config's help and the README
    mergekit_method: str = ""   # the mergekit merge method it runs (a name in mergekit's registry)
    takes_base: bool = False    # merges task vectors against a base model (`base:`, default the nearest ancestor)
    takes_density: bool = False  # keeps a share `density` of each task vector
    default_density: float = 0.5

    def mergekit_config(self, t: float, p0: Ref, p1: Ref, base: Ref | None = None,
                        density: float | None = None) -> dict:
        """mergekit's configuration of the merge at t of p0 and p1 (and `base`, `density` where taken)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<merge method '{self.name}' ({self.label}), mergekit '{self.mergekit_method}'>"


def register(method: MergeMethod) -> MergeMethod:
    """Make `method` available to `method:` by its name; names are unique. The mergekit method it names is
    checked against mergekit's registry when a merge is built (`check_mergekit`)."""
    if not method.mergekit_method:
        raise ValueError(f"{type(method).__name__}: a merge method needs a mergekit_method")
    return _REGISTRY.add(method.name, method)  # a name empty or taken: ValueError


def unregister(name: str) -> None:
    """Remove a registered method (tests registering a toy one clean up with it)."""
    _REGISTRY.remove(name)


def names() -> list[str]:
    """Registered method names, in registration order."""
    return list(_REGISTRY)


def with_base() -> list[str]:
    """Names of the methods that take a base model."""
    return [m.name for m in _REGISTRY.values() if m.takes_base]


def get(name: "str | MergeMethod") -> MergeMethod:
    """The method registered as `name`; ValueError naming the registered ones otherwise."""
    if isinstance(name, MergeMethod):
        return name
    return _REGISTRY.lookup(name)


def label(name: str | None) -> str:
    """A method's label ('SLERP', 'linear merge', ...); an unregistered one's name; 'merge' for none."""
    m = _REGISTRY.get(name) if name else None
    return m.label if m is not None else name or "merge"


def check_mergekit(method: MergeMethod) -> None:
    """ValueError unless mergekit registers the merge method `method` runs (`mergekit.merge_methods.get`)."""
    from mergekit.merge_methods import registry

    try:
        registry.get(method.mergekit_method)
    except RuntimeError:
        have = sorted(m.spec.name for m in registry.registered_methods())
        raise ValueError(f"merge method '{method.name}' runs mergekit's '{method.mergekit_method}', which mergekit "
                         f"does not register (mergekit's methods: {', '.join(have)})") from None


def describe() -> str:
    """'name: description; ...' for every registered method (config help, README)."""
    return "; ".join(f"{m.name}: {m.description}" for m in _REGISTRY.values())


# the built-in methods register themselves on import
from featureflow.merges import slerp, linear, ties  # noqa: E402,F401
