"""How the validator reports problems of one kind: the first few, then a count."""

from __future__ import annotations

MAX_REPORTED = 5  # problems of one kind listed before summarising the rest


def capped(problems: list[str], what: str) -> list[str]:
    """The first :data:`MAX_REPORTED` problems, then one line counting the rest."""
    if len(problems) <= MAX_REPORTED:
        return problems
    return [*problems[:MAX_REPORTED], f"... and {len(problems) - MAX_REPORTED} more {what}"]
