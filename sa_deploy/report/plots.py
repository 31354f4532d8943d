"""Report charts (matplotlib, Agg backend): accuracy, latency and size per artifact, INT8 sensitivity."""
from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_STATUS_COLOR = {"ok": "#2b7bba", "failed": "#d62728", "over budget": "#ff7f0e"}


def png_metadata() -> dict[str, str]:
    """PNG text chunks of every chart: ``Software`` is the signature by which a later write recognises the file."""
    from sa_deploy import __version__

    return {"Software": f"sa-deploy {__version__} (matplotlib {matplotlib.__version__})"}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110, metadata=png_metadata())
    plt.close(fig)
    return buf.getvalue()


def _labels(artifacts: list[dict]) -> list[str]:
    return [a["name"] for a in artifacts]


def accuracy_chart(artifacts: list[dict], reference_top1: float | None) -> bytes | None:
    rows = [a for a in artifacts if a.get("top1") is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    ref_images = max(a.get("images") or 0 for a in rows)
    # artifacts scored on a subset (CoreML off macOS) say so, with PyTorch's top-1 on that subset
    labels = [a["name"] if (a.get("images") or 0) == ref_images else
              f"{a['name']} ({a['images']} img; PyTorch {a['top1'] + a['drop']:.2f})" for a in rows]
    ax.barh(labels, [a["top1"] for a in rows], color=[_STATUS_COLOR.get(a["status"], "#888") for a in rows])
    if reference_top1 is not None:
        ax.axvline(reference_top1, color="black", linestyle="--", label=f"PyTorch FP32 {reference_top1:.2f}%")
        ax.legend(loc="lower right")
    lo = min(a["top1"] for a in rows)
    ax.set_xlim(max(0.0, lo - 5), min(100.0, max(a["top1"] for a in rows) + 2))
    ax.invert_yaxis()
    ax.set_xlabel("top-1 accuracy (%)")
    ax.set_title("Accuracy per artifact")
    return _png(fig)


def bar_chart(artifacts: list[dict], key: str, xlabel: str, title: str) -> bytes | None:
    rows = [a for a in artifacts if a.get(key) is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    ax.barh(_labels(rows), [a[key] for a in rows], color="#2b7bba")
    for i, a in enumerate(rows):
        ax.text(a[key], i, f" {a[key]:.2f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return _png(fig)


def sensitivity_chart(layers: list[dict[str, Any]], top: int = 25) -> bytes | None:
    """Nodes ranked by the SQNR they lose locally (accumulated SQNR always looks worst at the network's end)."""
    if not layers:
        return None
    rows = sorted(layers, key=lambda r: -r["sqnr_loss_db"])[:top]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.5))
    ax.barh([(r["node"] or r["tensor"])[-48:] for r in rows], [r["sqnr_loss_db"] for r in rows], color="#9467bd")
    ax.invert_yaxis()
    ax.set_xlabel("SQNR lost at this node, INT8 vs FP32 (dB, higher = more sensitive)")
    ax.set_title(f"INT8 per-layer sensitivity ({len(rows)} worst of {len(layers)})")
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)


CHART_NAMES = ("accuracy", "latency", "size", "sensitivity")


def all_charts(report: dict) -> dict[str, bytes]:
    arts = report.get("artifacts", [])
    charts = {
        "accuracy": accuracy_chart(arts, (report.get("reference") or {}).get("top1")),
        "latency": bar_chart(arts, "latency_ms", "median latency, batch 1 (ms)", "Latency per artifact"),
        "size": bar_chart(arts, "size_mb", "size (MB)", "Size per artifact"),
        "sensitivity": sensitivity_chart(report.get("sensitivity", [])),
    }
    return {k: v for k, v in charts.items() if v is not None}
