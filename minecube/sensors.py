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
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from minecube.errors import MinecubeError, find_stack_level

if TYPE_CHECKING:
    import pystac

__all__ = [
    "BANDS",
    "BASELINE_DN_OFFSET",
    "COMMON_BANDS",
    "LEARNED_MASKS",
    "MASKED_SCL",
    "MASKS",
    "SENSORS",
    "BandAsset",
    "Radiometry",
    "Sensor",
    "SensorPluginWarning",
    "UnknownSensorError",
    "band_assets",
    "dn_offset_evidence",
    "mask_valid",
    "radiometry",
    "read_sensors",
    "register_sensor",
    "sensor_for",
]

BANDS = ("blue", "green", "red", "nir")
"""The bands a cube holds by default, where its sensor has them (RGB + NIR, the paper's)."""

COMMON_BANDS = (
    "coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08",
    "nir09", "cirrus", "swir16", "swir22", "pan", "lwir11", "lwir12",
)  # fmt: skip
"""Band names of the built-in sensors: the STAC ``eo`` common names (``rededge1…3`` as Earth
Search names Sentinel-2's red-edge bands). A registered sensor may name others: any lower-case
name (letters, digits, ``_``) that is not a mask or ``ndvi``."""

_BAND_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

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

    @property
    def default_bands(self) -> tuple[str, ...]:
        """The bands a cube gets when none are asked for: those of :data:`BANDS` the sensor
        has, else all of its bands."""
        return tuple(b for b in BANDS if b in self.bands) or tuple(self.bands)

    def bands_of(self, item: pystac.Item) -> tuple[str, ...]:
        """The :attr:`default_bands` that ``item`` has an asset for (a three-band archive's
        items give three)."""
        return tuple(b for b in self.default_bands if any(k in item.assets for k in self.bands[b]))

    def check_bands(self, bands: Sequence[str]) -> tuple[str, ...]:
        """``bands`` as a tuple, or a :class:`UnknownSensorError` naming those the sensor
        lacks and the ``bands=`` that works."""
        bands = tuple(str(b) for b in bands)
        missing = [b for b in bands if b not in self.bands]
        if missing or not bands:
            have = [b for b in bands if b in self.bands] or list(self.default_bands)
            raise UnknownSensorError(
                f"sensor {self.name!r} has no band {missing[0] if missing else None!r}"
                f"{f' (nor {missing[1:]})' if len(missing) > 1 else ''}; it declares "
                f"{list(self.bands)}. Ask for bands it has, e.g. bands={tuple(have)!r}, or "
                "declare the band with register_sensor (the sensor's bands: mapping)"
            )
        return bands

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML/JSON (:func:`read_sensors` reads it back)."""
        d = asdict(self)
        d["bands"] = {b: list(k) for b, k in self.bands.items()}
        d["masks"] = {m: list(k) for m, k in self.masks.items()}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Sensor:
        """A sensor from plain data (a YAML file, the run configuration), validated.

        >>> s = Sensor.from_dict({"name": "ee-s2", "title": "Earth Engine S2 export",
        ...     "collections": ["ee-s2"], "bands": {"blue": ["B2"], "green": ["B3"],
        ...     "red": ["B4"]}, "resolution": 10, "scale": 1.0, "offset": 0.0})
        >>> s.default_bands, s.default_mask
        (('blue', 'green', 'red'), 'none')
        >>> all(Sensor.from_dict(s.to_dict()) == s for s in SENSORS.values())  # round trip
        True
        """
        import pydantic

        if not isinstance(d, Mapping):
            raise ValueError(f"a sensor is a mapping of settings, got {d!r:.120}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"sensor {d.get('name')!r}: unknown keys {unknown}; a sensor has {sorted(known)}"
            )
        data = {"masks": {}, "default_mask": "none", "nodata": None, **d}
        try:
            return pydantic.TypeAdapter(cls).validate_python(data)
        except pydantic.ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()
            )
            raise ValueError(f"sensor {d.get('name')!r}: {problems}") from None


_S2_BANDS = {  # Earth Search v1, Planetary Computer / Earth Search v0, Copernicus Data Space
    "blue": ("blue", "B02", "B02_10m"),
    "green": ("green", "B03", "B03_10m"),
    "red": ("red", "B04", "B04_10m"),
    "nir": ("nir", "B08", "B08_10m"),
    "coastal": ("coastal", "B01", "B01_60m"),
    "rededge1": ("rededge1", "B05", "B05_20m"),
    "rededge2": ("rededge2", "B06", "B06_20m"),
    "rededge3": ("rededge3", "B07", "B07_20m"),
    "nir08": ("nir08", "B8A", "B8A_20m"),
    "swir16": ("swir16", "B11", "B11_20m"),
    "swir22": ("swir22", "B12", "B12_20m"),
}
_LANDSAT_BANDS = {
    "blue": ("blue",),
    "green": ("green",),
    "red": ("red",),
    "nir": ("nir08",),
    "coastal": ("coastal",),
    "swir16": ("swir16",),
    "swir22": ("swir22",),
}

SENSORS: dict[str, Sensor] = {}
"""The registry: sensor name → :class:`Sensor`. Add to it with :func:`register_sensor`."""


def register_sensor(sensor: Sensor, *, replace: bool = False) -> Sensor:
    """Add a sensor (or another catalogue's layout of one) to :data:`SENSORS`.

    A sensor declares the bands it has: any of :data:`COMMON_BANDS` (a three-band archive
    declares three), or other lower-case names. Raises ``ValueError`` if the name is taken (pass
    ``replace=True``), a band name is not allowed or has no asset key, a mask is not one minecube
    knows, or the default mask is not among the sensor's masks. Sensors can also be registered
    from a file (:func:`read_sensors`), the run configuration's ``sensors:`` and packages'
    ``minecube.sensors`` entry points.
    """
    if sensor.name in SENSORS and not replace:
        raise ValueError(f"sensor {sensor.name!r} is registered already; pass replace=True")
    bad = [
        b
        for b in sensor.bands
        if not _BAND_NAME.match(str(b)) or b in (*MASKS, *LEARNED_MASKS, "ndvi")
    ]
    if not sensor.bands or bad:
        raise ValueError(
            f"sensor {sensor.name!r}: bands must be a non-empty mapping of lower-case band "
            f"names (e.g. {list(BANDS)}, or any of {list(COMMON_BANDS)}) to asset keys; "
            f"not allowed: {bad or 'an empty mapping'}"
        )
    empty = [b for b, keys in sensor.bands.items() if not keys or isinstance(keys, str)]
    if empty:
        raise ValueError(
            f"sensor {sensor.name!r}: bands {empty} need a list of asset keys to look for, "
            "e.g. {'red': ['red', 'B04']}"
        )
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
        bands={
            "coastal": ("B01",),
            "blue": ("B02",),
            "green": ("B03",),
            "red": ("B04",),
            "rededge1": ("B05",),
            "rededge2": ("B06",),
            "rededge3": ("B07",),
            "nir": ("B8A",),
            "swir16": ("B11",),
            "swir22": ("B12",),
        },
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
        bands={
            "coastal": ("B01",),
            "blue": ("B02",),
            "green": ("B03",),
            "red": ("B04",),
            "nir": ("B05",),
            "swir16": ("B06",),
            "swir22": ("B07",),
        },
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


def _asset_key(item: pystac.Item, band: str, bands: Sequence[str], sensor: Sensor) -> str:
    keys = sensor.bands[band]
    key = next((k for k in keys if k in item.assets), None)
    if key is None:
        present = [b for b in bands if any(k in item.assets for k in sensor.bands[b])]
        raise UnknownSensorError(
            f"item {item.id!r} (collection {item.collection_id!r}, read as {sensor.name!r}) has "
            f"no asset for {band!r} (looked for {list(keys)}); its assets are "
            f"{sorted(item.assets)}. "
            + (f"To build without it, pass bands={tuple(present)!r}; if" if present else "If")
            + " this catalogue names the band differently, register its layout with "
            "minecube.sensors.register_sensor"
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
    baseline_offset: bool = False
    """The sensor follows the Sentinel-2 offset convention (:attr:`Sensor.baseline_offset`):
    the scene check tests its pixels for the +1000 DN offset."""
    doubt: str | None = None
    """Why the item's own metadata do not settle the offset (they contradict each other, or
    none says): then the scene check's pixels decide either way. Where the metadata settle it,
    only proof overrules them: clear pixels below the offset, which files carrying it cannot
    hold."""

    @property
    def _first(self) -> BandAsset:
        return next(b for name, b in self.bands.items() if name not in MASKS)

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
            "doubt": self.doubt,
        }

    def with_offset(self, offset: float, source: str, note: str) -> Radiometry:
        bands = {
            k: b if k in MASKS else BandAsset(b.key, b.scale, offset, b.nodata)
            for k, b in self.bands.items()
        }
        return replace(self, bands=bands, source=source, notes=(*self.notes, note))


def radiometry(
    item: pystac.Item,
    bands: Sequence[str] | None = None,
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
    bands = sensor.default_bands if bands is None else sensor.check_bands(bands)
    mask = sensor.default_mask if mask is None else mask
    out: dict[str, BandAsset] = {}
    declared_any = False
    for band in bands:
        key = _asset_key(item, band, bands, sensor)
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
    source = "item" if declared_any else "sensor default"
    result = Radiometry(item.id, sensor.name, out, source, baseline_offset=sensor.baseline_offset)
    if sensor.baseline_offset:
        result = _sentinel2_offset(item, result, declared_any)
    return result


def _sentinel2_offset(item: pystac.Item, r: Radiometry, declared: bool) -> Radiometry:
    baseline, where = _baseline(item)
    applied = item.properties.get(
        "earthsearch:boa_offset_applied", item.properties.get("sentinel:boa_offset_applied")
    )
    r = replace(r, baseline=baseline, baseline_from=where)
    carried = r.carried_offset
    if applied is True:
        if baseline is not None and baseline >= "04.00":  # a claim seen to be wrong
            r = replace(r, doubt=f"earthsearch:boa_offset_applied is true, but processing "
                        f"baseline {baseline} ({where}) writes files with +1000 DN")  # fmt: skip
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
    when = item.datetime or dt.datetime.fromisoformat(str(item.properties.get("start_datetime")))
    after = when.replace(tzinfo=when.tzinfo or dt.UTC) >= BASELINE_CHANGE
    r = replace(r, doubt="no processing baseline in the item: the offset is a guess")
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


def read_sensors(
    source: str | os.PathLike | Sequence[Mapping[str, Any]], *, replace: bool = False
) -> list[Sensor]:
    """Register the sensors of a YAML/JSON file (or a list of mappings), and return them.

    The file holds a list of sensors, or a mapping with a ``sensors:`` list; each sensor has the
    fields of :class:`Sensor` (``masks``, ``default_mask``, ``nodata`` may be left out for an
    archive without a mask layer). A run configuration takes the same list as ``sensors:``, and a
    package can ship sensors through the ``minecube.sensors`` entry-point group (an entry
    pointing to a :class:`Sensor`, a list of them, or a function returning either), so nothing
    has to be registered again in every process.

    Examples
    --------
    >>> from pathlib import Path
    >>> _ = Path("/tmp/sensors.yaml").write_text('''
    ... - name: ee-s2-rgb
    ...   title: Sentinel-2 RGB exported from Earth Engine
    ...   collections: [ee-s2-rgb]
    ...   bands: {blue: [B2], green: [B3], red: [B4]}
    ...   resolution: 10
    ...   scale: 0.0001
    ...   offset: 0
    ... ''')
    >>> [s.name for s in read_sensors("/tmp/sensors.yaml", replace=True)]
    ['ee-s2-rgb']
    >>> SENSORS["ee-s2-rgb"].default_bands
    ('blue', 'green', 'red')
    >>> _ = SENSORS.pop("ee-s2-rgb")
    """
    where = "the sensors"
    if isinstance(source, str | os.PathLike):
        import yaml

        where = os.fspath(source)
        if not os.path.exists(where):
            raise FileNotFoundError(f"sensor file {where!r} does not exist")
        with open(where) as f:
            source = yaml.safe_load(f)
    if isinstance(source, Mapping):
        source = source.get("sensors", source)
    if not isinstance(source, Sequence) or isinstance(source, str):
        raise ValueError(f"{where}: expected a list of sensors, got {type(source).__name__}")
    try:
        sensors = [s if isinstance(s, Sensor) else Sensor.from_dict(s) for s in source]
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    names = [s.name for s in sensors]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{where}: the sensors {twice} are defined more than once")
    return [register_sensor(s, replace=replace) for s in sensors]


class SensorPluginWarning(UserWarning):
    """A package's ``minecube.sensors`` entry point could not be loaded."""


def _load_entry_points() -> None:
    """Register the sensors that installed packages declare (``minecube.sensors`` group)."""
    import warnings
    from importlib.metadata import entry_points

    for ep in entry_points(group="minecube.sensors"):
        try:
            value = ep.load()
            value = value() if callable(value) and not isinstance(value, Sensor) else value
            value = [value] if isinstance(value, Sensor | Mapping) else list(value)
            read_sensors(value, replace=True)
        except Exception as e:  # a broken plugin must not break minecube
            warnings.warn(
                f"the minecube.sensors entry point {ep.name!r} ({ep.value}) of an installed "
                f"package could not be registered: {e}",
                SensorPluginWarning,
                stacklevel=find_stack_level(),
            )


_load_entry_points()
