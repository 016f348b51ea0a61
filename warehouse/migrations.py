"""Forward migrations of the warehouse schema.

The manifest records the ``schema_version`` its parts were written with. When a writer opens a
warehouse older than :data:`warehouse.schema.SCHEMA_VERSION`, each missing step runs once, in
order, and commits with the new version. Additive changes (a new column or table) need no
data rewrite: views read parts with ``union_by_name`` and a migration stages one empty part in
the new schema so the column exists; renames and type changes rewrite the affected parts.
A warehouse newer than this code is refused (upgrade videobert rather than corrupt it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from warehouse import schema as sch

if TYPE_CHECKING:
    from warehouse.store import StagedPart, Writer

Migration = Callable[["Writer"], "list[StagedPart]"]


def _v1_initial(writer: Writer) -> list[StagedPart]:
    """Schema v1: the initial tables. Empty tables are typed views, so nothing to write."""
    return []


def _v2_visual_tokens(writer: Writer) -> list[StagedPart]:
    """Schema v2: tables clip_features, codebooks, visual_tokens (new tables: no data)."""
    return []


def _v3_models(writer: Writer) -> list[StagedPart]:
    """Schema v3: model_runs, training_metrics, embeddings, indices, eval_results, promotions."""
    return []


MIGRATIONS: dict[int, Migration] = {1: _v1_initial, 2: _v2_visual_tokens, 3: _v3_models}


def add_columns_part(writer: Writer, table: str) -> StagedPart:
    """Stage an empty part in ``table``'s current schema (for additive migrations)."""
    import pyarrow as pa

    return writer.stage(table, pa.Table.from_pylist([], schema=sch.table(table).arrow))


def migrate(writer: Writer, target: int | None = None) -> list[int]:
    """Apply the missing migrations up to ``target`` (default: the code's schema version).

    Returns:
        The versions applied (empty when already current).

    Raises:
        WarehouseError: when the warehouse was written by a newer schema.
    """
    from warehouse.store import WarehouseError

    target = sch.SCHEMA_VERSION if target is None else target
    current = int(writer.wh.manifest()["schema_version"])
    if current > target:
        raise WarehouseError(
            f"the warehouse in {writer.wh.home} has schema v{current}, newer than this "
            f"videobert (v{target}): upgrade videobert")
    applied = []
    for version in range(current + 1, target + 1):
        step = MIGRATIONS.get(version)
        if step is None:
            raise WarehouseError(f"no migration to schema v{version}")
        writer.commit(step(writer), schema_version=version,
                      message=f"migrate to schema v{version}", publish=False)
        applied.append(version)
    return applied
