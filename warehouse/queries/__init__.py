"""Named SQL queries, one ``.sql`` file each, so SQL is not scattered through tasks."""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def load(name: str) -> str:
    """The text of ``warehouse/queries/<name>.sql``.

    Raises:
        FileNotFoundError: for an unknown query name.
    """
    f = resources.files("warehouse.queries") / f"{name}.sql"
    if not f.is_file():
        raise FileNotFoundError(f"no named query {name!r} in warehouse/queries")
    return f.read_text(encoding="utf-8")
