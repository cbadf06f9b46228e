"""Figures: quicklooks of cubes (matplotlib is imported only when a figure is drawn)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["quicklook"]


def quicklook(
    cube: xr.Dataset,
    path: str | os.PathLike,
    *,
    columns: int = 4,
    vmax: float = 0.3,
    title: str | None = None,
) -> None:
    """Save a grid of true-colour composites, one panel per period, with valid-data shares.

    Pixels without a valid observation are shown in grey. Reflectance is stretched linearly
    from 0 to ``vmax``.

    Examples
    --------
    >>> import numpy as np, pandas as pd, xarray as xr
    >>> cube = xr.Dataset(
    ...     {"reflectance": (("time", "band", "y", "x"), np.full((2, 4, 8, 8), 0.1, "float32")),
    ...      "valid_count": (("time", "y", "x"), np.ones((2, 8, 8), "int16"))},
    ...     coords={"time": pd.date_range("2023-01-01", periods=2, freq="QS"),
    ...             "band": ["blue", "green", "red", "nir"]})
    >>> quicklook(cube, "/tmp/quicklook.png")
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rgb = cube.reflectance.sel(band=["red", "green", "blue"]).transpose("time", "y", "x", "band")
    rgb = np.asarray(rgb.values, dtype="float32")
    n = rgb.shape[0]
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.1 * rows), squeeze=False)
    valid = np.asarray(cube.valid_count.values) > 0
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k >= n:
            continue
        image = np.clip(rgb[k] / vmax, 0, 1)
        image[~valid[k]] = 0.5
        ax.imshow(image, interpolation="nearest")
        ax.set_title(
            f"{str(cube.time.values[k])[:10]} · valid {100 * valid[k].mean():.0f} %", fontsize=9
        )
    fig.suptitle(title or cube.attrs.get("site_id", ""), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
