"""``--plot``: cost per operation against cache size (log-log), one line per system."""

from __future__ import annotations

from pathlib import Path

from common import SIZES, Series
from hit_path import HIT_SYSTEMS, INSTALL_SYSTEMS, MANAGER_HIT
from report import Results


def plot(series: list[Series], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = Results(series)
    panels = (
        ("Hit path, uniform keys", "hit", HIT_SYSTEMS, "uniform"),
        ("Hit path, Zipf(1.1) keys", "hit", HIT_SYSTEMS, "zipf"),
        ("Install at capacity (1 LRU eviction)", "install", INSTALL_SYSTEMS, "new ids"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(18, 6), sharey=True)
    for ax, (label, group, systems, dist) in zip(axes, panels, strict=True):
        for system in systems:
            ys = [res.median(group, system, size, dist) / 1000 for size in SIZES]
            ours = system in MANAGER_HIT or system == INSTALL_SYSTEMS[0]
            ax.plot(SIZES, ys, marker="o", linewidth=2.5 if ours else 1.2,
                    linestyle="-" if ours else "--", label=system)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(SIZES, [f"{s:,}" for s in SIZES])
        ax.set_xlabel("entries in the cache")
        ax.set_title(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("µs per operation (median, log scale)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
