"""Stable ingest error codes and the exception that carries them.

Every bad input file ends as exactly one ``ingest_errors`` row whose ``code`` is one of
:data:`warehouse.error_codes.CODES`. Codes are a user-facing contract: add new ones, never rename.
"""

from __future__ import annotations

from warehouse.error_codes import CODES as CODES  # re-exported with IngestError


class IngestError(Exception):
    """A per-file failure that becomes one ``ingest_errors`` row.

    Args:
        code: one of :data:`CODES`.
        message: a human-readable explanation naming the bad value.
        stage: the pipeline stage that failed (``scan``, ``hash``, ``probe``, ``validate``,
            ``text``, ``manifest``, ``asr``, ...).
    """

    def __init__(self, code: str, message: str, stage: str = "probe") -> None:
        if code not in CODES:
            raise ValueError(f"unknown ingest error code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.stage = stage


class InputError(ValueError):
    """A mistake in what the user asked for (a missing path, a pattern that matches nothing,
    an empty folder, a bad option value): the CLI prints it as one line and exits 2."""
