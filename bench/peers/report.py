"""Medians of the repetitions, the markdown table, the ratios against the
best peer and the chart."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from .common import PEERS, Result


@dataclass
class Row:
    setup: str
    workload: str
    system: str
    runs: int
    samples: int
    samples_s: float
    mb_s: float
    cpu_gb: float
    first_batch_s: float
    resume: str  # median seconds, "cannot", or "" (not measured)
    peak_rss_mb: float
    fetched: float | None  # store bytes fetched / the shards' bytes (shardstream)


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def summarize(results: list[Result]) -> list[Row]:
    groups: dict[tuple[str, str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.setup, r.workload, r.system), []).append(r)
    rows = []
    for (setup, wl, system), rs in groups.items():
        resumes = [r.resume_s for r in rs if r.resume_s is not None]
        if any("cannot resume" in r.note for r in rs):
            resume = "cannot"
        else:
            resume = f"{_median(resumes):.2f}" if resumes else ""
        fetched = [r.fetched_bytes / r.shard_bytes for r in rs if r.fetched_bytes and r.shard_bytes]
        rows.append(
            Row(
                setup=setup,
                workload=wl,
                system=system,
                runs=len(rs),
                samples=min(r.samples for r in rs),
                samples_s=_median([r.samples / r.wall_s for r in rs]),
                mb_s=_median([r.stored_bytes / 1e6 / r.wall_s for r in rs]),
                cpu_gb=_median([r.cpu_s / (r.stored_bytes / 1e9) for r in rs]),
                first_batch_s=_median([r.first_batch_s for r in rs]),
                resume=resume,
                peak_rss_mb=_median([r.peak_rss / 2**20 for r in rs]),
                fetched=_median(fetched) if fetched else None,
            )
        )
    return rows


def ratios(rows: list[Row], setup: str, workload: str) -> tuple[float, str, float, str] | None:
    """shardstream's samples/s over the fastest peer's, and its CPU/GB over
    the most frugal peer's (with their names); None if a side is missing."""
    ours = [r for r in rows if (r.setup, r.workload, r.system) == (setup, workload, "shardstream")]
    peers = [r for r in rows if (r.setup, r.workload) == (setup, workload) and r.system in PEERS]
    if not ours or not peers:
        return None
    fastest = max(peers, key=lambda r: r.samples_s)
    frugal = min(peers, key=lambda r: r.cpu_gb)
    return (
        ours[0].samples_s / fastest.samples_s,
        fastest.system,
        ours[0].cpu_gb / frugal.cpu_gb,
        frugal.system,
    )


def table(rows: list[Row]) -> str:
    out = []
    for setup in dict.fromkeys(r.setup for r in rows):
        out.append(f"\n{setup}:\n")
        out.append(
            "| workload | system | samples/s | MB/s | trainer CPU s/GB | first batch s "
            "| resume at 50 % s | peak trainer RSS MiB | store bytes fetched |"
        )
        out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in rows:
            if r.setup != setup:
                continue
            fetched = "" if r.fetched is None else f"{r.fetched:.3f}x"
            out.append(
                f"| {r.workload} | {r.system} | {r.samples_s:.0f} | {r.mb_s:.0f} | "
                f"{r.cpu_gb:.2f} | {r.first_batch_s:.2f} | {r.resume} | {r.peak_rss_mb:.0f} "
                f"| {fetched} |"
            )
    out.append("")
    last = ""
    for setup in dict.fromkeys(r.setup for r in rows):
        for wl in dict.fromkeys(r.workload for r in rows):
            q = ratios(rows, setup, wl)
            if q is None:
                continue
            speed, fastest, cpu, frugal = q
            out.append(
                f"{setup} {wl}: shardstream / best peer ({fastest}) samples/s {speed:.2f}; "
                f"trainer CPU per GB / best peer's ({frugal}) {cpu:.2f}"
            )
            if (setup, wl) == ("pinned", "tokens"):
                last = f"shardstream / best peer (samples/s): {speed:.2f}"
    if last:
        out.append(last)
    return "\n".join(out) + "\n"


def chart(rows: list[Row], path: Path) -> None:
    """Two panels (samples/s, trainer CPU s/GB), a group of bars per setup
    and workload, one bar per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r.setup, r.workload) for r in rows))
    systems = list(dict.fromkeys(r.system for r in rows))
    by = {(r.setup, r.workload, r.system): r for r in rows}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / len(systems)
    for ax, metric, title in (
        (axes[0], "samples_s", "samples/s (higher is better)"),
        (axes[1], "cpu_gb", "trainer CPU s per GB (lower is better)"),
    ):
        for i, system in enumerate(systems):
            xs, ys = [], []
            for g, (setup, wl) in enumerate(groups):
                row = by.get((setup, wl, system))
                if row is not None:
                    xs.append(g + (i - (len(systems) - 1) / 2) * width)
                    ys.append(getattr(row, metric))
            ax.bar(xs, ys, width, label=system)
        ax.set_xticks(range(len(groups)), [f"{wl}\n{setup}" for setup, wl in groups])
        ax.set_yscale("log")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
