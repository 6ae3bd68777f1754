"""The one user-facing error type.

Raise :class:`PhysinvError` for bad input (missing file, malformed field, unstable parameter).
The CLI prints its message as a single line on stderr and exits with code 2; library users
catch it like any ``ValueError``. The message should name the file and the field.
"""

from __future__ import annotations

from pathlib import Path


class PhysinvError(ValueError):
    """Bad input, reported to the user as one line (exit code 2 on the CLI)."""

    exit_code = 2


def input_error(source: str | Path | None, field: str | None, problem: str) -> PhysinvError:
    """Build a ``PhysinvError`` that reads ``<file>: <field>: <problem>``."""
    parts = [str(p) for p in (source, field) if p not in (None, "")]
    return PhysinvError(": ".join(parts + [problem]))
