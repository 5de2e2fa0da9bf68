"""Figure helpers shared by the scenario summaries (matplotlib, Agg backend, no display)."""
from __future__ import annotations

from pathlib import Path


def bar_panels(rows: list[dict], metrics: list[tuple[str, str]], title: str, path: Path,
               colors: list[str], panel_w: float = 3.0) -> None:
    """One bar panel per (column, label) in `metrics`, one bar per row's `arm`; saved to `path`.
    Empty values plot as 0."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(metrics), figsize=(panel_w * len(metrics), 3))
    arms = [r["arm"] for r in rows]
    for ax, (key, label) in zip(axes, metrics):
        ax.bar(arms, [float(r[key] or 0) for r in rows], color=colors[:len(arms)])
        ax.set_title(label, fontsize=9)
        ax.tick_params(labelsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
