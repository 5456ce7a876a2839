"""Cell ids as users type them: a unique prefix of a stored cell id names that cell."""

from __future__ import annotations

from collections.abc import Iterable

from chexbench.core.errors import DataError

#: candidates listed when a prefix is ambiguous
SHOW_CANDIDATES = 8


def resolve_cell_id(prefix: str, known: Iterable[str], where: str) -> str:
    """The one id in ``known`` equal to or starting with ``prefix``.

    Raises :class:`DataError` (one line) when none matches, or when several do, listing them.
    ``where`` names the results directory in the message.
    """
    prefix = prefix.strip()
    ids = sorted(set(known))
    if not prefix:
        raise DataError(f"empty cell id (see `chexbench status --results {where}`)")
    if prefix in ids:
        return prefix
    matches = [c for c in ids if c.startswith(prefix)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DataError(
            f"no cell '{prefix}' in {where} (no cell id starts with it; {len(ids)} cells there, "
            f"see `chexbench status --results {where}`)"
        )
    shown = ", ".join(matches[:SHOW_CANDIDATES]) + (
        f", … ({len(matches)} in all)" if len(matches) > SHOW_CANDIDATES else ""
    )
    raise DataError(f"cell id prefix '{prefix}' is ambiguous in {where}: {shown}; give more characters")
