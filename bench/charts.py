"""Charts of benchmark results."""

from __future__ import annotations

from pathlib import Path



def tuning_chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["mode"] == "throughput" and r["processed_rows_per_s"]]
    labels = ["baseline" if r["change"] == "baseline" else ", ".join(f"{k}={v}" for k, v in r["change"].items())
              for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.45 * len(rows) + 2), sharey=True)
    left.barh(labels, [r["processed_rows_per_s"] for r in rows], color="#3b6ea8")
    left.set_xlabel("processed rows/s (higher is better)")
    left.set_ylabel("setting changed from the baseline")
    left.invert_yaxis()
    right.barh(labels, [r["batch_p95_s"] for r in rows], color="#c26a3a")
    right.set_xlabel("batch duration p95, s (lower is better)")
    fig.suptitle("Streaming job over the full replay: which Spark settings matter")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Title": "Streaming job tuning"})
    plt.close(fig)
