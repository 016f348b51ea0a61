"""Training metrics: running sums of the model's per-batch metrics, warehouse rows, loss curve.

``VideoBert.loss`` returns per-batch mean losses (``loss_*``) and counts (``n_*``,
``correct_*``). :class:`MetricSums` adds them up on the device (no host sync per step) and turns
them into means and accuracies when asked; :class:`WarehouseSink` commits them to the
``training_metrics`` table (long format), and :func:`plot_history` draws ``loss.png``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from warehouse import queries
from warehouse.store import Warehouse, utcnow

ACC_NAMES = ("text_mlm", "video_mlm", "align")
"""Objectives with a masked-token or alignment accuracy (``acc_<name>``)."""


class MetricSums:
    """Sums of per-batch metrics since the last reset, kept as float64 tensors."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, metrics: Mapping[str, torch.Tensor], loss: torch.Tensor) -> None:
        """Add one micro-batch: its total ``loss`` and the model's detached metrics."""
        one = torch.ones((), device=loss.device)
        items = {"loss": loss.detach(), "batches": one, **metrics}
        for k, v in metrics.items():
            if k.startswith("loss_"):  # weight by the objective's count in this batch
                n = metrics.get(f"n_{k[5:]}")
                if n is None:  # no count: averaged over the batches that had the term
                    items[f"batches_{k}"] = one
                else:
                    items[k] = v * n
        for k, v in items.items():
            v = v.detach().to(self.device, torch.float64)
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()

    def reduce(self, world: int) -> None:
        """Sum over the processes of a distributed run (every rank must call it)."""
        if world > 1:
            import torch.distributed as dist

            keys = sorted(self.sums)
            flat = torch.stack([self.sums[k] for k in keys])
            dist.all_reduce(flat)
            self.sums = dict(zip(keys, flat.unbind(0), strict=True))

    def means(self) -> dict[str, float]:
        """``loss``: mean over batches; ``loss_<name>``: mean over the items of that objective
        (a batch without masked video tokens or joint pairs does not pull it towards 0), or over
        the batches that had the term when it has no count; ``acc_<name>`` = correct / n."""
        s = {k: float(v) for k, v in self.sums.items()}
        out: dict[str, float] = {}
        if s.get("batches", 0.0) > 0:
            out["loss"] = s["loss"] / s["batches"]
        for k, v in s.items():
            if k.startswith("loss_"):
                n = s.get(f"n_{k[5:]}", s.get(f"batches_{k}", 0.0))
                if n > 0:
                    out[k] = v / n
        for name in ACC_NAMES:
            n = s.get(f"n_{name}", 0.0)
            if n > 0:
                out[f"acc_{name}"] = s[f"correct_{name}"] / n
        return out

    def state(self) -> dict[str, float]:
        """Plain floats, for a checkpoint."""
        return {k: float(v) for k, v in self.sums.items()}

    def load(self, state: Mapping[str, float]) -> None:
        """Restore :meth:`state`."""
        self.sums = {k: torch.tensor(float(v), dtype=torch.float64, device=self.device)
                     for k, v in state.items()}


def metric_rows(model_run: str, step: int, split: str,
                values: Mapping[str, float]) -> list[dict[str, Any]]:
    """``training_metrics`` rows for one (step, split); non-finite values are left out."""
    at = utcnow()
    return [{"model_run": model_run, "step": step, "split": split, "metric": k,
             "value": float(v), "at": at}
            for k, v in sorted(values.items()) if math.isfinite(float(v))]


class WarehouseSink:
    """Commits metric rows of one run to the warehouse of a data home (rank 0 only)."""

    def __init__(self, home: Path | str, model_run: str, wait_s: float = 120.0) -> None:
        self.wh = Warehouse(home)
        self.model_run = model_run
        self.wait_s = wait_s

    def truncate_after(self, step: int) -> None:
        """Drop this run's rows after ``step`` (a resumed run logs those steps again)."""
        with self.wh.writer(wait_s=self.wait_s, purpose="pretrain metrics") as w:
            m = self.wh.manifest()
            old = [p["file"] for p in m["tables"].get("training_metrics", [])]
            if not old:
                return
            con = self.wh.connect()
            n_drop = con.sql(queries.load("training_metrics_after"),
                             params=[self.model_run, step]).fetchall()[0][0]
            if n_drop == 0:
                con.close()
                return
            kept = con.sql(queries.load("training_metrics_keep"),
                           params=[self.model_run, step]).to_arrow_table()
            con.close()
            w.commit([w.stage("training_metrics", kept)], remove={"training_metrics": old},
                     message=f"pretrain {self.model_run}: drop metrics after step {step}")

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Commit rows (one atomic commit)."""
        if not rows:
            return
        with self.wh.writer(wait_s=self.wait_s, purpose="pretrain metrics") as w:
            w.commit([w.stage("training_metrics", rows)], publish="auto",
                     message=f"pretrain {self.model_run}: metrics at step {rows[0]['step']}")


def plot_history(history: Sequence[Mapping[str, Any]], dest: Path, title: str) -> Path:
    """Draw losses (train and val, per objective) and accuracies against steps into a PNG.

    Args:
        history: records ``{"step": int, "split": "train"|"val", metric: value, ...}``.
        dest: the PNG path (written atomically).
        title: figure title.

    Returns:
        ``dest``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    from warehouse.atomic import write_bytes_atomic

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    names = sorted({k for h in history for k in h if k.startswith(("loss", "acc_"))})
    for split, style in (("train", "-"), ("val", "--")):
        rows = [h for h in history if h["split"] == split]
        for i, name in enumerate(names):  # one colour per metric, solid train, dashed val
            pts = [(h["step"], h[name]) for h in rows if name in h]
            if pts:
                ax = ax_acc if name.startswith("acc_") else ax_loss
                ax.plot(*zip(*pts, strict=True), style, color=f"C{i % 10}", marker=".",
                        label=f"{split} {name}")
    ax_loss.set(xlabel="step", ylabel="loss", title="losses")
    ax_acc.set(xlabel="step", ylabel="accuracy", title="accuracies", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        if ax.lines:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(buf.getvalue(), dest)
    return dest
