"""Words for what a figure shows: a surface's description, its axis labels, whether it holds
the centre. Shared by the static figures and the HTML report."""

from __future__ import annotations

from typing import Any

from lossatlas.landscape.record import Surface


def has_center(surface: Surface) -> bool:
    """Whether the origin (the weights) lies inside the grid's span."""
    return all(c.min() <= 0 <= c.max() for c in surface.coords)


def describe(surface: Surface) -> str:
    d = surface.directions.settings
    shape = " × ".join(str(len(c)) for c in surface.coords)
    how = ", ".join(f"{k} {d[k]}" for k in ("norm", "ignore", "seed") if k in d)
    text = f"{surface.ndim}D, {shape} points, {d.get('kind', 'user')} directions"
    return f"{text} ({how})" if how else text


def direction_labels(settings: dict[str, Any]) -> tuple[str, str]:
    """Axis labels of a 2D surface: PCA components say how much of the path they explain."""
    if settings.get("kind") == "models-plane":
        a, b, c = settings["names"]
        return (f"distance from {a} towards {b}", f"distance towards {c} (orthogonal part)")
    if settings.get("kind") == "axis" and len(settings.get("entries", ())) >= 2:
        return tuple(
            f"{e}: offset from {v:.3g}"
            for e, v in zip(settings["entries"][:2], settings["origin_values"][:2])
        )
    ratio = settings.get("explained_variance_ratio") if settings.get("kind") == "pca" else None
    if ratio is not None and len(ratio) >= 2:
        return tuple(
            f"PC{k + 1} ({100 * r:.1f}% of the path's variance)" for k, r in enumerate(ratio[:2])
        )
    return ("direction 1 (coefficient)", "direction 2 (coefficient)")
