"""Forward migrations of the warehouse schema.

The manifest records the ``schema_version`` its parts were written with. When a writer opens a
warehouse older than :data:`warehouse.schema.SCHEMA_VERSION`, each missing step runs once, in
order, and commits with the new version. Additive changes (a new column or table) need no
data rewrite: views read parts with ``union_by_name`` and a migration stages one empty part in
the new schema so the column exists; renames and type changes rewrite the affected parts.
A warehouse newer than this code is refused (upgrade videobert rather than corrupt it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import pyarrow as pa

from warehouse import schema as sch
from warehouse.parts import StagedPart


class Stager(Protocol):
    """What a migration step needs of :class:`warehouse.store.Writer`: staging parts."""

    def stage(self, table: str, rows: Sequence[Mapping[str, Any]] | pa.Table) -> StagedPart:
        """Stage rows for ``table``."""


Migration = Callable[[Stager], list[StagedPart]]
"""One step: stages the parts its schema version needs; the writer commits them."""


def _v1_initial(writer: Stager) -> list[StagedPart]:
    """Schema v1: the initial tables. Empty tables are typed views, so nothing to write."""
    return []


def _v2_visual_tokens(writer: Stager) -> list[StagedPart]:
    """Schema v2: tables clip_features, codebooks, visual_tokens (new tables: no data)."""
    return []


def _v3_models(writer: Stager) -> list[StagedPart]:
    """Schema v3: model_runs, training_metrics, embeddings, indices, eval_results, promotions."""
    return []


def _v4_captions(writer: Stager) -> list[StagedPart]:
    """Schema v4: generated_captions and caption_eval (new tables: no data)."""
    return []


MIGRATIONS: dict[int, Migration] = {1: _v1_initial, 2: _v2_visual_tokens, 3: _v3_models,
                                    4: _v4_captions}


def add_columns_part(writer: Stager, table: str) -> StagedPart:
    """Stage an empty part in ``table``'s current schema (for additive migrations)."""
    return writer.stage(table, pa.Table.from_pylist([], schema=sch.table(table).arrow))
