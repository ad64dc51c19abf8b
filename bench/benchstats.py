"""Percentiles and latency lines the latency benches print alike."""

from __future__ import annotations


def pct(values: list[float], p: float) -> float:
    """The p-th percentile: the value at the rounded index p/100 * (n - 1); 0.0 for none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else 0.0


def nearest_rank(values: list[float], p: float) -> float:
    """The p-th percentile by nearest rank (the smallest value with p% at or below it)."""
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * p // 100) - 1)]


def ms(values: list[float]) -> str:
    """p50, p99 and max of seconds, in milliseconds, and the sample count."""
    return (f"p50 {pct(values, 50) * 1000:7.2f} ms   p99 {pct(values, 99) * 1000:7.2f} ms   "
            f"max {max(values) * 1000:7.2f} ms   (n={len(values)})")
