"""The report's arithmetic (make test runs it: no peer packages needed):
medians, the ratios against the best peer, the last line."""

from __future__ import annotations

from .common import Result
from .report import ratios, summarize, table


def run(system: str, workload: str, rep: int, samples_s: float, cpu_gb: float) -> Result:
    gb = 1.0
    wall = 1000 / samples_s
    return Result(
        system=system,
        workload=workload,
        setup="pinned",
        rep=rep,
        samples=1000,
        batches=10,
        stored_bytes=int(gb * 1e9),
        wall_s=wall,
        cpu_s=cpu_gb * gb,
        first_batch_s=0.5,
        note="" if system != "webdataset" else "cannot resume",
        resume_s=None if system == "webdataset" else 0.4,
    )


def test_ratios_against_the_fastest_and_the_most_frugal_peer() -> None:
    results = []
    for rep, noise in enumerate((1.0, 1.5, 0.5)):  # medians: the 1.0 repetition
        results += [
            run("shardstream", "tokens", rep, 9000 * noise, 4 * noise),
            run("webdataset", "tokens", rep, 3000 * noise, 20 * noise),
            run("litdata", "tokens", rep, 2000 * noise, 16 * noise),
        ]
    rows = summarize(results)
    speed, fastest, cpu, frugal = ratios(rows, "pinned", "tokens") or (0, "", 0, "")
    assert (fastest, frugal) == ("webdataset", "litdata")
    assert abs(speed - 3.0) < 1e-9
    assert abs(cpu - 0.25) < 1e-9
    out = table(rows)
    assert out.rstrip().splitlines()[-1] == "shardstream / best peer (samples/s): 3.00"
    assert "| tokens | webdataset | 3000 |" in out
    assert "| cannot |" in out
