"""Sensors and catalogues: which asset holds each band, how its numbers become reflectance,
and which cloud masks an item carries.

Every catalogue names the same Sentinel-2 band differently (``red`` on Earth Search v1, ``B04``
on the Planetary Computer and Earth Search v0, ``B04_10m`` on the Copernicus Data Space) and
declares its scaling in its own way, or not at all. One small registry, :data:`SENSORS`, holds
those conventions; :func:`sensor_for` picks the entry for an item and :func:`radiometry`
resolves an item's scale, offset and nodata from its own metadata, saying where each came from.
:func:`register_sensor` adds a sensor or a catalogue minecube does not know yet.

The Sentinel-2 processing baseline 04.00 (25 January 2022, and every Collection-1 reprocessing,
baseline 05.xx) stores reflectance as DN + 1000, so reflectance = DN × 0.0001 − 0.1 there and
DN × 0.0001 before. Catalogues record the baseline in different places
(``s2:processing_baseline``, ``processing:version``, the ``N0400`` in the product id), and Earth
Search v1 removed the offset from some of its files itself (``earthsearch:boa_offset_applied``).
:func:`radiometry` reads all of them; :func:`minecube.cube.build` then checks each scene's pixels
against the answer (:func:`dn_offset_evidence`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from minecube.errors import MinecubeError

if TYPE_CHECKING:
    import pystac

__all__ = [
    "BANDS",
    "BASELINE_DN_OFFSET",
    "LEARNED_MASKS",
    "MASKED_SCL",
    "MASKS",
    "SENSORS",
    "BandAsset",
    "Radiometry",
    "Sensor",
    "UnknownSensorError",
    "band_assets",
    "dn_offset_evidence",
    "mask_valid",
    "radiometry",
    "register_sensor",
    "sensor_for",
]

BANDS = ("blue", "green", "red", "nir")
"""Reflectance bands minecube uses, by common name."""

MASKS = ("scl", "qa_pixel", "fmask", "none")
"""Cloud masks :func:`minecube.cube.build` applies by name (or give a callable):

- ``"scl"``: Sentinel-2 L2A scene classification; the codes in :data:`MASKED_SCL` are masked.
- ``"qa_pixel"``: Landsat Collection 2 Level-2 ``QA_PIXEL`` bit flags: fill, dilated cloud,
  cirrus, cloud, cloud shadow and snow are masked.
- ``"fmask"``: HLS v2 ``Fmask`` bit flags: cirrus, cloud, adjacent to cloud, cloud shadow and
  snow/ice are masked, and the fill value 255.
- ``"none"``: nothing is masked but nodata; recorded in the cube's attributes.

Besides these mask layers, :data:`LEARNED_MASKS` are computed from the pixels themselves.
"""

LEARNED_MASKS = ("csmask",)
"""Cloud masks computed from the reflectance, for any sensor with blue, green, red and NIR:

- ``"csmask"``: the ukis-csmask network (clear / cloud / cloud shadow) of
  :mod:`minecube.csmask`, for archives without a mask layer (SCL-less Sentinel-2, Landsat
  without ``QA_PIXEL``); ``pip install 'minecube[csmask]'``.
"""

MASKED_SCL: tuple[int, ...] = (0, 1, 3, 8, 9, 10)
"""SCL codes masked by default: no data, saturated/defective, cloud shadow, cloud medium and
high probability, thin cirrus."""

QA_PIXEL_BITS = {"fill": 0, "dilated_cloud": 1, "cirrus": 2, "cloud": 3, "shadow": 4, "snow": 5}
"""Landsat Collection 2 ``QA_PIXEL`` bits that :data:`MASKS` ``"qa_pixel"`` masks."""
FMASK_BITS = {"cirrus": 0, "cloud": 1, "adjacent": 2, "shadow": 3, "snow": 4}
"""HLS v2 ``Fmask`` bits that ``"fmask"`` masks (255 is fill)."""

BASELINE_CHANGE = dt.datetime(2022, 1, 25, tzinfo=dt.UTC)
"""First day of Sentinel-2 processing baseline 04.00, which added the +1000 DN offset."""
BASELINE_DN_OFFSET = 1000
"""The digital numbers that Sentinel-2 baseline ≥ 04.00 adds to every reflectance."""


class UnknownSensorError(MinecubeError, ValueError):
    """An item's collection or assets match no registered sensor."""


@dataclass(frozen=True)
class BandAsset:
    """Where a band lives in an item and how its digital numbers become reflectance."""

    key: str
    """Asset key in the item (``red`` on Earth Search v1, ``B04`` on the Planetary Computer)."""
    scale: float
    offset: float
    nodata: float | None


@dataclass(frozen=True)
class Sensor:
    """How one sensor's items look in the catalogues that serve them.

    Examples
    --------
    A catalogue that serves Sentinel-2 L2A under its own collection id and asset keys:

    >>> from minecube.sensors import SENSORS, Sensor, register_sensor
    >>> s2 = SENSORS["sentinel-2-l2a"]
    >>> mine = Sensor(
    ...     "my-s2", "Sentinel-2 L2A (our archive)", collections=("s2-our-archive",),
    ...     bands={**s2.bands, "red": ("band_red",)}, masks=s2.masks, default_mask="scl",
    ...     resolution=10.0, scale=1e-4, offset=0.0, nodata=0, baseline_offset=True)
    >>> register_sensor(mine).name
    'my-s2'
    >>> _ = SENSORS.pop("my-s2")
    """

    name: str
    title: str
    collections: tuple[str, ...]
    """Collection ids that hold this sensor's items, in every catalogue minecube knows."""
    bands: dict[str, tuple[str, ...]]
    """Common band name → asset keys to look for, first match wins."""
    masks: dict[str, tuple[str, ...]]
    """Mask name (one of :data:`MASKS`) → asset keys that hold it."""
    default_mask: str
    resolution: float
    """Native resolution of the reflectance bands, metres: the default cube resolution."""
    scale: float
    offset: float
    nodata: float | None
    """Radiometry used where an item declares none (Planetary Computer Sentinel-2)."""
    baseline_offset: bool = False
    """Sentinel-2 L2A: the DN offset follows the processing baseline (see :func:`radiometry`)."""
    platforms: tuple[str, ...] = ()
    """Prefixes of the ``platform`` / ``constellation`` property, to recognise items whose
    collection id is not listed."""
    notes: dict[str, str] = field(default_factory=dict, compare=False)
    """Catalogue → what minecube does there (for the docs)."""


_S2_BANDS = {
    "blue": ("blue", "B02", "B02_10m"),
    "green": ("green", "B03", "B03_10m"),
    "red": ("red", "B04", "B04_10m"),
    "nir": ("nir", "B08", "B08_10m"),
}
_LANDSAT_BANDS = {"blue": ("blue",), "green": ("green",), "red": ("red",), "nir": ("nir08",)}

SENSORS: dict[str, Sensor] = {}
"""The registry: sensor name → :class:`Sensor`. Add to it with :func:`register_sensor`."""


def register_sensor(sensor: Sensor, *, replace: bool = False) -> Sensor:
    """Add a sensor (or another catalogue's layout of one) to :data:`SENSORS`.

    Raises ``ValueError`` if the name is taken (pass ``replace=True``), a band or mask is not
    one minecube knows, or the default mask is not among the sensor's masks.
    """
    if sensor.name in SENSORS and not replace:
        raise ValueError(f"sensor {sensor.name!r} is registered already; pass replace=True")
    unknown = [b for b in sensor.bands if b not in BANDS]
    if unknown or set(sensor.bands) != set(BANDS):
        raise ValueError(f"sensor bands must be exactly {list(BANDS)}, got {list(sensor.bands)}")
    if [m for m in sensor.masks if m not in MASKS]:
        raise ValueError(f"sensor masks must be among {list(MASKS)}, got {list(sensor.masks)}")
    if sensor.default_mask not in (*sensor.masks, "none"):
        raise ValueError(
            f"default_mask {sensor.default_mask!r} is not one of the sensor's masks "
            f"{[*sensor.masks, 'none']}"
        )
    SENSORS[sensor.name] = sensor
    return sensor


register_sensor(
    Sensor(
        "sentinel-2-l2a",
        "Sentinel-2 MSI Level-2A surface reflectance",
        collections=(
            "sentinel-2-l2a",  # Earth Search v1, Planetary Computer, Copernicus Data Space
            "sentinel-2-c1-l2a",  # Earth Search v1, Collection 1
            "sentinel-s2-l2a-cogs",  # Earth Search v0
            "sentinel-s2-l2a",
        ),
        bands=_S2_BANDS,
        masks={"scl": ("scl", "SCL", "SCL_20m")},
        default_mask="scl",
        resolution=10.0,
        scale=1e-4,
        offset=0.0,
        nodata=0,
        baseline_offset=True,
        platforms=("sentinel-2",),
    )
)
register_sensor(
    Sensor(
        "landsat-c2-l2",
        "Landsat 4–9 Collection 2 Level-2 surface reflectance (TM, ETM+, OLI)",
        collections=("landsat-c2-l2", "landsat-c2l2-sr"),
        bands=_LANDSAT_BANDS,
        masks={"qa_pixel": ("qa_pixel",)},
        default_mask="qa_pixel",
        resolution=30.0,
        scale=2.75e-5,
        offset=-0.2,
        nodata=0,
        platforms=("landsat",),
    )
)
register_sensor(
    Sensor(
        "hls-s30",
        "Harmonized Landsat Sentinel-2 v2.0, Sentinel-2 part (S30)",
        collections=("HLSS30_2.0", "HLSS30.v2.0"),
        bands={"blue": ("B02",), "green": ("B03",), "red": ("B04",), "nir": ("B8A",)},
        masks={"fmask": ("Fmask",)},
        default_mask="fmask",
        resolution=30.0,
        scale=1e-4,
        offset=0.0,
        nodata=-9999,
    )
)
register_sensor(
    Sensor(
        "hls-l30",
        "Harmonized Landsat Sentinel-2 v2.0, Landsat part (L30)",
        collections=("HLSL30_2.0", "HLSL30.v2.0"),
        bands={"blue": ("B02",), "green": ("B03",), "red": ("B04",), "nir": ("B05",)},
        masks={"fmask": ("Fmask",)},
        default_mask="fmask",
        resolution=30.0,
        scale=1e-4,
        offset=0.0,
        nodata=-9999,
    )
)


def sensor_for(item: pystac.Item) -> Sensor:
    """The registered sensor of an item, from its collection id (or its platform).

    Raises :class:`UnknownSensorError` naming the collection and how to register it.

    Examples
    --------
    >>> import datetime, pystac
    >>> item = pystac.Item("x", None, None, datetime.datetime(2023, 1, 1), {},
    ...                    collection="landsat-c2-l2")
    >>> sensor_for(item).name, sensor_for(item).resolution
    ('landsat-c2-l2', 30.0)
    """
    collection = item.collection_id
    for sensor in SENSORS.values():
        if collection in sensor.collections:
            return sensor
    platform = str(
        item.properties.get("constellation")
        or item.properties.get("platform")
        or item.properties.get("eo:platform")
        or ""
    ).lower()
    for sensor in SENSORS.values():
        if platform and any(platform.startswith(p) for p in sensor.platforms):
            return sensor
    known = {c: s.name for s in SENSORS.values() for c in s.collections}
    raise UnknownSensorError(
        f"item {item.id!r} of collection {collection!r} (platform {platform or None!r}) is not "
        f"a sensor minecube knows; known collections: {sorted(known)}. Add its asset names and "
        "scaling with minecube.sensors.register_sensor(Sensor(...)) "
        "(see docs/howto/catalogues.md)"
    )


def _asset_key(item: pystac.Item, band: str, keys: tuple[str, ...], sensor: Sensor) -> str:
    key = next((k for k in keys if k in item.assets), None)
    if key is None:
        raise UnknownSensorError(
            f"item {item.id!r} (collection {item.collection_id!r}, read as {sensor.name!r}) has "
            f"no asset for {band!r} (looked for {list(keys)}); its assets are "
            f"{sorted(item.assets)}. If this catalogue names them differently, register its "
            "layout with minecube.sensors.register_sensor"
        )
    return key


def _declared(asset: pystac.Asset) -> tuple[float | None, float | None, Any]:
    """Scale, offset and nodata as the asset declares them: raster v1 ``raster:bands`` or the
    asset-level fields of STAC 1.1 / raster v2 (``raster:scale``, ``raster:offset``, ``nodata``)."""
    fields = asset.extra_fields
    band = (fields.get("raster:bands") or [{}])[0]
    scale = band.get("scale", fields.get("raster:scale"))
    offset = band.get("offset", fields.get("raster:offset"))
    nodata = band.get("nodata", fields.get("nodata"))
    if scale is None and offset is not None:
        scale = 1.0
    return scale, offset, nodata


_PRODUCT_BASELINE = re.compile(r"_N(\d{2})\.?(\d{2})(?:_|\.|$)")


def _baseline(item: pystac.Item) -> tuple[str | None, str | None]:
    """Sentinel-2 processing baseline ``NN.NN`` and the field it was read from."""
    p = item.properties
    for name in ("s2:processing_baseline", "processing:version", "sentinel:processing_baseline"):
        value = p.get(name)
        if value:
            return f"{float(value):05.2f}", name
    for name in ("s2:product_uri", "sentinel:product_id", "s2:datatake_id", "s2:granule_id"):
        match = _PRODUCT_BASELINE.search(str(p.get(name) or ""))
        if match:
            return f"{match[1]}.{match[2]}", name
    match = _PRODUCT_BASELINE.search(item.id)
    if match:
        return f"{match[1]}.{match[2]}", "id"
    return None, None


@dataclass(frozen=True)
class Radiometry:
    """An item's scale, offset and nodata, and where each came from (kept in provenance)."""

    item: str
    sensor: str
    bands: dict[str, BandAsset]
    """Band (common name, and the mask) → asset and its radiometry."""
    source: str
    """``"item"`` (declared by the item), ``"baseline"``, ``"sensor default"``,
    ``"acquisition date"`` (Sentinel-2 baseline unknown) or ``"scene check"`` (corrected)."""
    baseline: str | None = None
    baseline_from: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def _first(self) -> BandAsset:
        return next(b for name, b in self.bands.items() if name in BANDS)

    @property
    def offset(self) -> float:
        return self._first.offset

    @property
    def scale(self) -> float:
        return self._first.scale

    @property
    def carried_offset(self) -> float:
        """The offset that files carrying :data:`BASELINE_DN_OFFSET` need at this scale."""
        return round(-BASELINE_DN_OFFSET * self.scale, 12)

    def record(self) -> dict[str, Any]:
        """Plain JSON for the cube's provenance."""
        first = self._first
        return {
            "sensor": self.sensor,
            "scale": first.scale,
            "offset": first.offset,
            "nodata": first.nodata,
            "source": self.source,
            "baseline": self.baseline,
            "baseline_from": self.baseline_from,
            "notes": list(self.notes),
        }

    def with_offset(self, offset: float, source: str, note: str) -> Radiometry:
        bands = {
            k: BandAsset(b.key, b.scale, offset, b.nodata) if k in BANDS else b
            for k, b in self.bands.items()
        }
        return Radiometry(
            self.item,
            self.sensor,
            bands,
            source,
            self.baseline,
            self.baseline_from,
            (*self.notes, note),
        )


def radiometry(
    item: pystac.Item,
    bands: tuple[str, ...] = BANDS,
    *,
    mask: str | None = None,
    sensor: Sensor | None = None,
) -> Radiometry:
    """Resolve an item's band assets, scale, offset and nodata from its own metadata.

    Scale, offset and nodata come from the item's ``raster:bands`` (or STAC 1.1 asset fields)
    where it declares them. For Sentinel-2 L2A the processing baseline decides the offset where
    the item declares none (Planetary Computer, Earth Search v0): −0.1 from baseline 04.00 on,
    0 before; ``earthsearch:boa_offset_applied: true`` means the archive already removed it
    (0), whatever ``raster:bands`` says. Where the baseline cannot be found anywhere, the offset
    follows the acquisition date and a note says so; :func:`minecube.cube.build` then checks
    the scene's pixels.

    Examples
    --------
    >>> import pystac, datetime
    >>> item = pystac.Item("S2B_MSIL2A_20230610T100559_R022_T33UUP", None, None,
    ...                    datetime.datetime(2023, 6, 10), {"s2:processing_baseline": "05.09"},
    ...                    collection="sentinel-2-l2a")
    >>> for key in ("B02", "B03", "B04", "B08", "SCL"):
    ...     item.add_asset(key, pystac.Asset(f"{key}.tif"))
    >>> r = radiometry(item)
    >>> r.bands["nir"], r.source, r.baseline
    (BandAsset(key='B08', scale=0.0001, offset=-0.1, nodata=0), 'baseline', '05.09')
    """
    sensor = sensor or sensor_for(item)
    mask = sensor.default_mask if mask is None else mask
    out: dict[str, BandAsset] = {}
    declared_any = False
    for band in bands:
        if band not in BANDS:
            raise ValueError(f"unknown band {band!r}; minecube reads {list(BANDS)}")
        key = _asset_key(item, band, sensor.bands[band], sensor)
        scale, offset, nodata = _declared(item.assets[key])
        declared_any |= scale is not None
        out[band] = BandAsset(
            key,
            float(sensor.scale if scale is None else scale),
            float(sensor.offset if scale is None else (offset or 0.0)),
            sensor.nodata if nodata is None else nodata,
        )
    if mask != "none":
        if mask not in sensor.masks:
            raise ValueError(
                f"mask={mask!r} is not available for {sensor.name} items (collection "
                f"{item.collection_id!r}); choose one of {[*sensor.masks, 'none']} or a callable"
            )
        key = next((k for k in sensor.masks[mask] if k in item.assets), None)
        if key is None:
            raise ValueError(
                f"item {item.id!r} has no {mask!r} mask asset (looked for "
                f"{list(sensor.masks[mask])}; its assets are {sorted(item.assets)}); build with "
                f"mask='none' (no cloud mask), another of {list(MASKS)}, or a callable"
            )
        nodata = _declared(item.assets[key])[2]
        out[mask] = BandAsset(key, 1.0, 0.0, nodata)
    result = Radiometry(item.id, sensor.name, out, "item" if declared_any else "sensor default")
    if sensor.baseline_offset:
        result = _sentinel2_offset(item, result, declared_any)
    return result


def _sentinel2_offset(item: pystac.Item, r: Radiometry, declared: bool) -> Radiometry:
    baseline, where = _baseline(item)
    applied = item.properties.get(
        "earthsearch:boa_offset_applied", item.properties.get("sentinel:boa_offset_applied")
    )
    r = Radiometry(r.item, r.sensor, r.bands, r.source, baseline, where)
    carried = r.carried_offset
    if applied is True:
        if r.offset == 0.0:
            return r
        return r.with_offset(
            0.0,
            "item",
            f"earthsearch:boa_offset_applied is true: the offset {r.offset} declared in "
            "raster:bands was already removed from the files",
        )
    if declared:
        return r
    if baseline is not None:
        after = baseline >= "04.00"
        return r.with_offset(
            carried if after else 0.0,
            "baseline",
            f"processing baseline {baseline} ({where}): DN "
            + ("carry +1000" if after else "carry no offset"),
        )
    when = item.datetime or dt.datetime.fromisoformat(
        str(item.properties.get("start_datetime")).replace("Z", "+00:00")
    )
    after = when.replace(tzinfo=when.tzinfo or dt.UTC) >= BASELINE_CHANGE
    return r.with_offset(
        carried if after else 0.0,
        "acquisition date",
        "no processing baseline in the item (looked in s2:processing_baseline, "
        "processing:version and the product id): offset "
        f"{carried if after else 0.0} assumed from the acquisition date "
        f"({'on or after' if after else 'before'} 2022-01-25)",
    )


def band_assets(
    item: pystac.Item, bands: tuple[str, ...] = (*BANDS, "scl")
) -> dict[str, BandAsset]:
    """Map minecube band names (and a mask name) to an item's assets, with scale and offset.

    A shortcut for ``radiometry(item, bands, mask=...).bands``; see :func:`radiometry`.

    Examples
    --------
    >>> import pystac, datetime
    >>> item = pystac.Item("x", None, None, datetime.datetime(2023, 1, 1),
    ...                    {"s2:processing_baseline": "05.09"}, collection="sentinel-2-l2a")
    >>> for key in ("B02", "B03", "B04", "B08", "SCL"):
    ...     item.add_asset(key, pystac.Asset(f"{key}.tif"))
    >>> band_assets(item)["nir"]
    BandAsset(key='B08', scale=0.0001, offset=-0.1, nodata=0)
    """
    masks = [b for b in bands if b in MASKS]
    reflectance = tuple(b for b in bands if b not in MASKS)
    unknown = [b for b in reflectance if b not in BANDS]
    if unknown:
        raise ValueError(f"unknown band {unknown[0]!r}; minecube reads {[*BANDS, *MASKS]}")
    return radiometry(item, reflectance, mask=masks[0] if masks else "none").bands


def mask_valid(mask: str, layer, *, scl_codes=MASKED_SCL):
    """Where a mask layer says a pixel is clear (numpy or xarray, lazy with dask; NaN, the
    engines' fill, is never clear).

    >>> import numpy as np
    >>> mask_valid("qa_pixel", np.array([21824, 22280, 1, np.nan]))  # clear, cloud, fill, none
    array([ True, False, False, False])
    >>> mask_valid("scl", np.array([4, 9, 0, np.nan]))  # vegetation, cloud, no data, none
    array([ True, False, False, False])
    """
    import xarray as xr

    labelled = isinstance(layer, xr.DataArray)
    present = layer == layer
    if mask == "scl":
        masked = layer.isin(list(scl_codes)) if labelled else np.isin(layer, scl_codes)
        return present & ~masked
    codes = (layer.where(present, 0) if labelled else np.where(present, layer, 0)).astype("uint16")
    if mask == "qa_pixel":
        bits = sum(1 << b for b in QA_PIXEL_BITS.values())
        return present & ((codes & bits) == 0)
    if mask == "fmask":
        bits = sum(1 << b for b in FMASK_BITS.values())
        return present & (codes != 255) & ((codes & bits) == 0)
    raise ValueError(f"mask={mask!r} is not one of {list(MASKS)}")


def dn_offset_evidence(
    dn: np.ndarray, valid: np.ndarray, dn_offset: float, *, min_pixels: int = 200
) -> tuple[bool | None, dict[str, float]]:
    """Do a scene's digital numbers carry an additive offset of ``dn_offset``? Read from the
    darkest clear pixels of every band.

    ``dn`` is (band, y, x) of a decimated read, ``valid`` (y, x) the clear pixels. A scene whose
    files carry the +1000 offset has almost no clear pixel below 1000 DN and its darkest pixels
    (water, shadow, dense vegetation in blue and red) just above it; a scene without it has many
    pixels below. Returns ``True`` (carries it), ``False`` (does not) or ``None`` (too few clear
    pixels, or a scene too bright to tell: deserts, snow), and the figures behind the answer.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> dark = rng.uniform(100, 3000, (4, 40, 40))  # reflectance 0.01–0.3, no offset
    >>> dn_offset_evidence(dark, np.ones((40, 40), bool), 1000)[0]
    False
    >>> dn_offset_evidence(dark + 1000, np.ones((40, 40), bool), 1000)[0]
    True
    """
    clear = valid & np.all(dn > 0, axis=0)
    n = int(clear.sum())
    if n < min_pixels:
        return None, {"clear_pixels": n}
    values = dn[:, clear].astype("float64")
    below = float(np.mean(values < dn_offset, axis=1).max())
    p1 = float(np.percentile(values, 1, axis=1).min())
    figures = {"clear_pixels": n, "below_offset_fraction": round(below, 4), "p1_dn": round(p1, 1)}
    if below >= 0.05:
        return False, figures
    if below <= 0.002 and p1 < dn_offset * 1.3:
        return True, figures
    return None, figures
