"""A wide family in the Sankey: siblings made the same way are collapsed until asked for.

A model zoo (configs/zoo.yaml: 24 fine-tunes of one root) would draw 24 child columns of nodes and a junction
each. Members with the same parents, made the same way (`make`) on the same domains, are a **sibling group**
(six seeds of one fine-tune); in a family of more than `COLLAPSE_OVER` members each group shows its first member
and folds the others into one node on their parent, whose click expands the group (`?expand=<first member>`,
or `expand=all`). A member that is some member's parent is never folded, so a folded member has no children.
Only the Sankey folds: every table lists every member.
"""

from __future__ import annotations

COLLAPSE_OVER = 12  # a family with more members than this folds its sibling groups by default


def sibling_groups(models: list[dict], edges: list[tuple[str, str]]) -> dict[str, list[str]]:
    """First member's name -> every member of its group, in the family's order; groups of one are left out."""
    parents = {m["model"]: tuple(p for p, c in edges if c == m["model"]) for m in models}
    groups: dict[tuple, list[str]] = {}
    for m in models:
        if parents[m["model"]]:  # roots are never folded
            key = (parents[m["model"]], m.get("make"), tuple(m.get("domains") or ()))
            groups.setdefault(key, []).append(m["model"])
    return {ms[0]: ms for ms in groups.values() if len(ms) > 1}


def parse_expand(expand: str | None) -> set[str] | str:
    """`expand` as the query gives it: 'all', or group names separated by commas."""
    if expand is None:
        return set()
    return "all" if expand.strip() == "all" else {g.strip() for g in expand.split(",") if g.strip()}


def folded(models: list[dict], edges: list[tuple[str, str]], expand: set[str] | str) -> dict[str, list[str]]:
    """Group name -> its members folded into one node (not the first, never a parent of anyone): empty for a
    family of at most `COLLAPSE_OVER` members, with `expand` 'all', and for the groups `expand` names."""
    if len(models) <= COLLAPSE_OVER or expand == "all":
        return {}
    is_parent = {p for p, _ in edges}
    out = {}
    for g, ms in sibling_groups(models, edges).items():
        if g in expand:
            continue
        hide = [m for m in ms[1:] if m not in is_parent]
        if hide:
            out[g] = hide
    return out


def expand_query(expand: set[str] | str, group: str | None) -> str:
    """The `expand` value that also opens `group` (None: every group)."""
    if group is None or expand == "all":
        return "all"
    return ",".join(sorted(set(expand) | {group}))


__all__ = ["COLLAPSE_OVER", "expand_query", "folded", "parse_expand", "sibling_groups"]
