"""Regenerate ``tests/data/synthetic100_i3d.parquet``: real I3D features of the synthetic corpus.

The retrieval tests train on the first 100 videos of ``generate_synthetic(seed=0)`` (200 clips).
Running I3D on 200 clips costs minutes on a 2-core CPU, so the features of every clip past the
first block of 20 videos are cached here, made by this script with the real tokenize flow
(``i3d`` encoder: the converted Kinetics-400 checkpoint). The tests still run I3D live on the
first block. Rows are keyed by video file name and clip start, and carry the encoder version:
a test fails with a clear message when the I3D port changes, and this script is rerun::

    python tests/data/make_synthetic_i3d.py        # ~5 min on 2 cores
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

OUT = Path(__file__).with_name("synthetic100_i3d.parquet")
N_VIDEOS = 100


def main() -> None:
    from flows.ingest import IngestParams, ingest_flow
    from flows.visual_tokens import TokenizeParams, tokenize_flow
    from tasks.ingest.synthetic import generate_synthetic
    from videobert.prefect_env import configure_prefect_env, local_flow_settings
    from warehouse.store import Warehouse

    work = Path(tempfile.mkdtemp(prefix="vb-syn-i3d-"))
    home = work / "home"
    configure_prefect_env(home)
    corpus = generate_synthetic(work / "syn", N_VIDEOS, seed=0)
    with local_flow_settings():
        ingest_flow(IngestParams(source=str(corpus.root), home=str(home)))
        tokenize_flow(TokenizeParams(home=str(home), encoders=["i3d"], levels=1, branching=2,
                                     progress=True))
    con = Warehouse(home).connect()
    rows = con.sql("""
        SELECT regexp_extract(min(vf.path), '[^/]+$') AS name, c.start_s, f.encoder_version,
               f.vector::FLOAT[] AS vector, f.logits::FLOAT[] AS logits, f.n_frames
        FROM clip_features f JOIN clips c USING (clip_id) JOIN video_files vf
          ON vf.video_id = c.video_id
        WHERE f.encoder = 'i3d'
        GROUP BY c.clip_id, c.start_s, f.encoder_version, f.vector, f.logits, f.n_frames
        ORDER BY name, c.start_s""").to_arrow_table()
    half = pa.list_(pa.float16())
    table = rows.set_column(3, "vector", rows["vector"].cast(half)).set_column(
        4, "logits", rows["logits"].cast(half))
    pq.write_table(table, OUT, compression="zstd")
    print(f"{table.num_rows} clips -> {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
