"""The warning for code written for the predecessor (deepgram-audiocodes-bridge).

Such code keeps running where that is cheap (old field names, old keywords, ``AC_TOKEN``;
see MIGRATING.md), and each use warns once per place with a :class:`MigrationWarning`
that names what to write instead. It is a :class:`DeprecationWarning`, so Python shows it
for code run as ``__main__`` and pytest shows it in its summary; to find every place at
once, turn it into an error: ``python -W error::acdg_asgi.MigrationWarning``.
"""

from __future__ import annotations

import warnings

__all__ = ["MigrationWarning", "moved"]


class MigrationWarning(DeprecationWarning):
    """Predecessor code that still works, with what to write instead."""


def moved(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is the predecessor's spelling of ``new``.

    The default ``stacklevel`` points at the caller of the function that calls this.
    """
    warnings.warn(f"{old} is the predecessor's API; use {new} (see MIGRATING.md)",
                  MigrationWarning, stacklevel=stacklevel)
