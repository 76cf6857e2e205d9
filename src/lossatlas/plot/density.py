"""The static figure of a Hessian eigenvalue density (from `spectral_density`).

`figure_density` draws into a new figure or the caller's Axes (`ax=`); `plot_density` saves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lossatlas.curvature.density import Density
from lossatlas.errors import LossatlasError
from lossatlas.plot._common import figure_axes, save

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def figure_density(
    density: Density,
    *,
    ax: Axes | None = None,
    log: bool = True,
    sigma: float | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (7.0, 4.5),
) -> Figure:
    """The smoothed eigenvalue density, the extreme Ritz values marked; see `plot_density`.

    Args:
        density, log, sigma, title: as for `plot_density`.
        figsize: inches of the new figure (ignored with `ax`).
        ax: matplotlib Axes to draw into; default a new figure.

    Returns:
        The figure: new, or the one holding `ax`.
    """
    if not isinstance(density, Density):
        raise LossatlasError(f"expected a Density, got {type(density).__name__}")
    grid, values = density.density(sigma=sigma)
    fig, ax = figure_axes(ax, figsize, "figure_density")
    ax.plot(grid, values, color="C0", lw=1.5, label="smoothed density")
    ax.fill_between(grid, values, color="C0", alpha=0.15, lw=0)
    if log:
        ax.set_yscale("log")
        top = float(values.max())
        ax.set_ylim(top * 1e-8, top * 3)  # the Gaussian tails would reach 1e-300
    lo, hi = density.extremes
    for x, name in ((lo, "min"), (hi, "max")):
        ax.axvline(x, color="C3", lw=1.0, ls="--", label=f"{name} Ritz value {x:.4g}")
    if lo < 0 < hi:  # where curvature changes sign
        ax.axvline(0.0, color="k", lw=0.6, alpha=0.5)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)" if log else "density")
    s = density.settings
    ax.set_title(
        title
        or f"Hessian eigenvalue density (SLQ): dim {s.get('dim')}, "
        f"{s.get('n_vectors')} vectors, {s.get('steps')} steps",
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def plot_density(
    density: Density,
    path: str | Path,
    *,
    log: bool = True,
    sigma: float | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (7.0, 4.5),
    dpi: float = 150,
) -> Path:
    """Write the eigenvalue density to PNG, SVG or PDF (by suffix) and return the path.

    Args:
        density: from `spectral_density`.
        path: the file; its suffix picks the format.
        log: logarithmic density axis (outliers and the bulk both show).
        sigma: Gaussian width (see `Density.density`).
        title: replaces the default title (dim, vectors, steps).
        figsize: inches.
        dpi: resolution of PNG output.

    Returns:
        The path written.
    """
    fig = figure_density(density, log=log, sigma=sigma, title=title, figsize=figsize)
    return save(fig, path, dpi=dpi)
