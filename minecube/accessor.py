"""The ``.minecube`` accessor on xarray Datasets and DataArrays: a thin face over the API.

Importing :mod:`minecube` registers it::

    import minecube
    labels = cube.minecube.segment("models/fpn-rgbn")
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import xarray as xr

if TYPE_CHECKING:
    from minecube.models import Segmenter

__all__ = ["MinecubeAccessor"]


@xr.register_dataarray_accessor("minecube")
@xr.register_dataset_accessor("minecube")
class MinecubeAccessor:
    """``cube.minecube.segment(model)``, ``.segment_to_zarr(model, store)``; on predictions,
    ``pred.minecube.class_areas()``, ``.expansion()`` and ``.transitions(t0, t1)``.

    Examples
    --------
    >>> import minecube, xarray as xr
    >>> hasattr(xr.Dataset(), "minecube") and hasattr(xr.DataArray(), "minecube")
    True
    """

    def __init__(self, obj: xr.Dataset | xr.DataArray) -> None:
        self._obj = obj

    def segment(self, model: str | os.PathLike | Segmenter, **kwargs: Any) -> xr.DataArray:
        """:func:`minecube.segment.segment` of this cube."""
        from minecube.segment import segment

        return segment(self._obj, model, **kwargs)

    def segment_to_zarr(
        self, model: str | os.PathLike | Segmenter, store: str | os.PathLike, **kwargs: Any
    ) -> xr.DataArray:
        """:func:`minecube.segment.segment_to_zarr` of this cube."""
        from minecube.segment import segment_to_zarr

        return segment_to_zarr(self._obj, model, store, **kwargs)

    def class_areas(self, **kwargs: Any):
        """:func:`minecube.stats.class_areas` of this prediction."""
        from minecube.stats import class_areas

        return class_areas(self._obj, **kwargs)

    def expansion(self, **kwargs: Any):
        """:func:`minecube.stats.expansion` of this prediction."""
        from minecube.stats import expansion

        return expansion(self._obj, **kwargs)

    def transitions(self, t0: int | str, t1: int | str, **kwargs: Any):
        """:func:`minecube.stats.transitions` of this prediction between two periods."""
        from minecube.stats import transitions

        return transitions(self._obj, t0, t1, **kwargs)
