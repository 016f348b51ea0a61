"""Data tests: queries that must return zero rows (dbt-style), plus key uniqueness.

Key checks are generated from each schema file's PRIMARY KEY; the others live in
``warehouse/checks/*.sql``. ``videobert warehouse check`` runs them all.
"""

from __future__ import annotations

from importlib import resources

from warehouse import schema as sch
from warehouse.error_codes import CODES
from warehouse.store import Warehouse


def check_queries() -> dict[str, str]:
    """Every data-test query by name."""
    queries: dict[str, str] = {}
    for name, t in sch.tables().items():
        if t.key:
            cols = ", ".join(f'"{c}"' for c in t.key)
            queries[f"{name}_key_unique"] = (
                f'SELECT {cols}, count(*) AS n FROM "{name}" GROUP BY {cols} HAVING count(*) > 1')
    codes = ", ".join(f"'{c}'" for c in CODES)
    queries["ingest_errors_known_codes"] = (
        f"SELECT code FROM ingest_errors WHERE code NOT IN ({codes})")
    folder = resources.files("warehouse") / "checks"
    for f in sorted(folder.iterdir(), key=lambda p: p.name):
        if f.name.endswith(".sql"):
            queries[f.name[:-4]] = f.read_text(encoding="utf-8")
    return queries


def run_checks(wh: Warehouse) -> dict[str, int]:
    """Run every data test on the committed warehouse; returns failing row counts by name."""
    con = wh.connect()
    try:
        return {name: len(con.execute(q).fetchall()) for name, q in check_queries().items()}
    finally:
        con.close()
