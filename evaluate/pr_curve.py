"""Precision/recall curve plots, one PNG per class.

Uses matplotlib's object API with the Agg canvas directly, so plotting works
without a display and never changes the pyplot backend of the caller.
"""
from __future__ import annotations

import os
import re

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from config.fileio import atomic_open


def _file_stem(class_name: str) -> str:
    # class names may hold spaces or slashes ("traffic light", "a/b")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", class_name).strip("._") or "class"


def plot_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], out_dir: str) -> list[str]:
    """Write ``pr_<class>.png`` for each entry of ``curves`` into ``out_dir``.

    ``curves`` maps a class name to ``(precision [D], recall [D], ap)``, the
    cumulative values over the detections in descending score order, as
    :meth:`evaluate.eval_metric.MApMetric.pr_curves` returns them. Each file
    is written under a temporary name and then renamed, so a reader never sees
    a half-written PNG. Returns the paths, in the order of ``curves``.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for class_name, (precision, recall, ap) in curves.items():
        precision = np.asarray(precision, dtype=np.float64)
        recall = np.asarray(recall, dtype=np.float64)
        fig = Figure(figsize=(5, 5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot(recall, precision, label="precision")
        if recall.size:
            # the envelope the area AP integrates: best precision at any higher recall,
            # held from each recall back to the previous one (and from recall 0)
            envelope = np.maximum.accumulate(precision[::-1])[::-1]
            ax.plot(np.concatenate(([0.0], recall)), np.concatenate((envelope[:1], envelope)),
                    drawstyle="steps-pre", linestyle="--", label="interpolated")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.05)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"{class_name}: AP = {ap:.4f}")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left")
        path = os.path.join(out_dir, f"pr_{_file_stem(class_name)}.png")
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=80)
        paths.append(path)
    return paths
