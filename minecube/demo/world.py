"""Generate and open the demo world: a synthetic Sentinel-2 L2A archive around fictional mines.

Layout of a world folder::

    world.json                 parameters, minecube version, summary (written last)
    sites.geojson, sites.csv   the site table (site_id, name, commodity, climate, koppen, ...)
    stac/collection.json       the sentinel-2-l2a collection
    stac/items.json            a FeatureCollection of items, asset hrefs relative to the folder
    cogs/<zone>/<band>/<sq>/<year>/<month>/<item id>/{B02,B03,B04,B08,SCL}.tif
                               (Landsat worlds: {SR_B2,SR_B3,SR_B4,SR_B5,QA_PIXEL}.tif at 30 m)
    truth/<site_id>/<year>.tif class-id raster on the site's grid (0 = no label)
    labels/<site_id>.gpkg      label polygons drawn from it (columns site_id, year, class, class_id)
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
from affine import Affine
from pyproj import Transformer
from shapely.geometry import box, mapping, shape
from shapely.ops import unary_union

from minecube import __version__
from minecube.classes import DEFAULT_CLASSES
from minecube.demo import scene, stacitems
from minecube.errors import DemoWorldError
from minecube.sites import utm_epsg

__all__ = ["SITES", "World", "WorldSpec", "generate", "many_sites", "open_world"]

RESOLUTION = 10  # metres
_MANIFEST = "world.json"
FORMAT = 2
"""Version of the generator's output; worlds of another format are regenerated, not reused."""
SENSORS = ("sentinel-2", "landsat")
"""Sensors a demo world can imitate: Sentinel-2 L2A (10 m, Earth Search v1 layout) or Landsat
Collection 2 Level-2 (30 m, ``landsat-c2-l2``, ``qa_pixel``)."""


@dataclass(frozen=True)
class DemoSite:
    """A fictional mine placed in a real mining district."""

    site_id: str
    name: str
    commodity: str
    climate: str
    """Köppen climate group: tropical, arid, temperate or continental."""
    koppen: str
    country: str
    lon: float
    lat: float
    straddles_tiles: bool = False
    """Place the site across the boundary of two tiles."""
    swath_edge: bool = False
    """Every other scene comes from an orbit whose swath ends inside the tile (nodata edge)."""


SITES: tuple[DemoSite, ...] = (
    DemoSite(
        "pilbara-iron",
        "Ironbark Ridge",
        "iron ore",
        "arid",
        "BWh",
        "Australia",
        118.62,
        -22.71,
        swath_edge=True,
    ),
    DemoSite("atacama-copper", "Cerro Turquesa", "copper", "arid", "BWk", "Chile", -68.90, -22.30),
    DemoSite(
        "kalimantan-coal", "Sungai Arang", "coal", "tropical", "Af", "Indonesia", 117.28, -0.52
    ),
    DemoSite(
        "ashanti-gold",
        "Nkwanta Hills",
        "gold",
        "tropical",
        "Aw",
        "Ghana",
        -1.68,
        6.21,
        swath_edge=True,
    ),
    DemoSite(
        "cape-york-bauxite",
        "Laterite Plains",
        "bauxite",
        "tropical",
        "Aw",
        "Australia",
        141.92,
        -12.63,
    ),
    DemoSite(
        "hunter-coal",
        "Hollow Creek",
        "coal",
        "temperate",
        "Cfa",
        "Australia",
        150.95,
        -32.45,
        straddles_tiles=True,
    ),
    DemoSite(
        "sudbury-nickel",
        "Birch Lake",
        "nickel",
        "continental",
        "Dfb",
        "Canada",
        -81.20,
        46.60,
        swath_edge=True,
    ),
    DemoSite("bodaibo-gold", "Kedrovy Log", "gold", "continental", "Dfc", "Russia", 115.70, 58.10),
)


MAX_MANY = 480
"""Most sites of a many-site world: 60 per district of :data:`SITES`."""


def many_sites(n: int, *, tile_size: int = 384) -> tuple[DemoSite, ...]:
    """``n`` small fictional mines for a many-site world, dealt in turn to the districts of
    :data:`SITES` (so across UTM zones, both hemispheres and every climate) and placed two
    tiles apart east and north of each district's mine: one tile per site, neighbours close
    enough to share a STAC search.

    >>> [s.site_id for s in many_sites(10)][:3], many_sites(10)[8].commodity
    (['pilbara-iron-000', 'atacama-copper-000', 'kalimantan-coal-000'], 'iron ore')
    """
    out = []
    ext = tile_size * RESOLUTION
    for k in range(n):
        district, number = SITES[k % len(SITES)], k // len(SITES)
        epsg = utm_epsg(district.lon, district.lat)
        e, n_ = Transformer.from_crs(4326, epsg, always_xy=True).transform(
            district.lon, district.lat
        )
        col, row = number % 6, number // 6
        e, n_ = (e // ext + 2 * col + 0.5) * ext, (n_ // ext + 2 * row + 0.5) * ext
        lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(e, n_)
        out.append(
            DemoSite(
                f"{district.site_id}-{number:03d}",
                f"{district.name} {number + 1}",
                district.commodity,
                district.climate,
                district.koppen,
                district.country,
                round(lon, 5),
                round(lat, 5),
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class WorldSpec:
    """Parameters of a demo world; the same spec and seed always give the same bytes."""

    seed: int = 0
    years: tuple[int, ...] = (2022, 2023, 2024)
    dates_per_year: int = 5
    tile_size: int = 384
    """Tile width and height in 10 m pixels (real MGRS tiles are 10980)."""
    site_size: int = 256
    """Width and height of each site's area in 10 m pixels."""
    sites: tuple[str, ...] | int | None = None
    """Site ids to generate; all of :data:`SITES` when None; a number N makes N small mines
    spread over the districts of :data:`SITES`, one tile each (:func:`many_sites`)."""
    sensor: str = "sentinel-2"
    """One of :data:`SENSORS`."""
    offset_from: str = "2022-01-25"
    """Sentinel-2: first day whose files carry the +1000 DN offset of processing baseline 04.00
    (the real change was 25 January 2022; earlier scenes are baseline 03.01, no offset). An
    early date (``"2015-01-01"``) gives a world whose files all carry it."""

    def __post_init__(self) -> None:
        if self.sensor not in SENSORS:
            raise ValueError(f"sensor={self.sensor!r} is not one of {list(SENSORS)}")
        try:
            dt.date.fromisoformat(self.offset_from)
        except ValueError as e:
            raise ValueError(
                f"offset_from={self.offset_from!r} is not a date like '2022-01-25'"
            ) from e
        if self.sensor == "landsat" and self.tile_size % 6:
            raise ValueError(
                f"a Landsat world needs tile_size divisible by 6 (30 m pixels), got "
                f"{self.tile_size}"
            )
        object.__setattr__(self, "years", tuple(int(y) for y in self.years))
        if isinstance(self.sites, int) and not isinstance(self.sites, bool):
            if not 1 <= self.sites <= MAX_MANY:
                raise ValueError(f"a many-site world has 1 to {MAX_MANY} sites, not {self.sites}")
        elif self.sites is not None:
            object.__setattr__(self, "sites", tuple(self.sites))
            known = [s.site_id for s in SITES]
            unknown = [s for s in self.sites if s not in known]
            if unknown or not self.sites:
                raise ValueError(f"unknown demo sites {unknown}; choose from {known}")
        if len(self.years) < 1 or sorted(set(self.years)) != list(self.years):
            raise ValueError(f"years must be increasing and unique, got {self.years}")
        if self.dates_per_year < 1:
            raise ValueError(f"dates_per_year must be ≥ 1, got {self.dates_per_year}")
        if self.tile_size % 2 or self.site_size % 2:
            raise ValueError(
                f"tile_size and site_size must be even (SCL is at 20 m), got "
                f"{self.tile_size} and {self.site_size}"
            )
        if self.site_size < 64 or self.tile_size < self.site_size + 32:
            raise ValueError(
                f"need site_size ≥ 64 and tile_size ≥ site_size + 32 pixels, got "
                f"site_size={self.site_size}, tile_size={self.tile_size}"
            )

    @property
    def demo_sites(self) -> tuple[DemoSite, ...]:
        if isinstance(self.sites, int):
            return many_sites(self.sites, tile_size=self.tile_size)
        return tuple(s for s in SITES if self.sites is None or s.site_id in self.sites)

    def _seeded_sites(self) -> list[tuple[int, DemoSite]]:
        """Each site with the index that seeds it: its place in :data:`SITES` (so a subset
        world has the same mines as the whole one), or 1000 + its number in a many-site world."""
        if isinstance(self.sites, int):
            return [(1000 + k, site) for k, site in enumerate(self.demo_sites)]
        chosen = set(self.demo_sites)
        return [(k, site) for k, site in enumerate(SITES) if site in chosen]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorldSpec:
        return cls(
            **{
                **d,
                "years": tuple(d["years"]),
                "sites": d["sites"]
                if d.get("sites") is None or isinstance(d["sites"], int)
                else tuple(d["sites"]),
            }
        )


@dataclass(frozen=True)
class _SiteGrid:
    """Where a site sits: its UTM grid, its tiles and its window inside the tiles' region."""

    site: DemoSite
    epsg: int
    bounds: tuple[float, float, float, float]  # site area, metres
    region_bounds: tuple[float, float, float, float]
    tiles: tuple[tuple[str, int, int], ...]  # (code, col, row)
    window: tuple[int, int, int]  # row0, col0, size in region pixels
    tile_extent: float

    @property
    def region_shape(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.region_bounds
        return round((y1 - y0) / RESOLUTION), round((x1 - x0) / RESOLUTION)

    def tile_slices(self, code: str) -> tuple[slice, slice, tuple[float, float, float, float]]:
        for c, col, row in self.tiles:
            if c == code:
                n = round(self.tile_extent / RESOLUTION)
                x0 = col * self.tile_extent
                y1 = (row + 1) * self.tile_extent
                r0 = round((self.region_bounds[3] - y1) / RESOLUTION)
                c0 = round((x0 - self.region_bounds[0]) / RESOLUTION)
                return (
                    slice(r0, r0 + n),
                    slice(c0, c0 + n),
                    (x0, y1 - self.tile_extent, x0 + self.tile_extent, y1),
                )
        raise KeyError(code)


def _site_grid(site: DemoSite, spec: WorldSpec, rng: np.random.Generator) -> _SiteGrid:
    epsg = utm_epsg(site.lon, site.lat)
    e, n = Transformer.from_crs(4326, epsg, always_xy=True).transform(site.lon, site.lat)
    ext = spec.tile_size * RESOLUTION
    size_m = spec.site_size * RESOLUTION
    col, row = int(e // ext), int(n // ext)
    slack = spec.tile_size - spec.site_size - 16
    dy = RESOLUTION * (8 + int(rng.integers(0, slack)))
    if site.straddles_tiles:
        x0 = (col + 1) * ext - size_m // 2
    else:
        x0 = col * ext + RESOLUTION * (8 + int(rng.integers(0, slack)))
    y1 = (row + 1) * ext - dy
    bounds = (float(x0), float(y1 - size_m), float(x0 + size_m), float(y1))
    cols = range(int(bounds[0] // ext), int((bounds[2] - 1) // ext) + 1)
    tiles = tuple((stacitems.tile_code(epsg, site.lat, c, row), c, row) for c in cols)
    region = (
        float(cols[0] * ext),
        float(row * ext),
        float((cols[-1] + 1) * ext),
        float((row + 1) * ext),
    )
    window = (
        round((region[3] - bounds[3]) / RESOLUTION),
        round((bounds[0] - region[0]) / RESOLUTION),
        spec.site_size,
    )
    return _SiteGrid(site, epsg, bounds, region, tiles, window, float(ext))


def _acquisition_dates(site: DemoSite, spec: WorldSpec, rng) -> list[dt.datetime]:
    """Dates spread over each year's observing season, at about 10:30 local solar time."""
    first, last = (5, 9) if site.climate == "continental" else (1, 12)
    hour = (10.5 - site.lon / 15) % 24
    out = []
    for year in spec.years:
        start = dt.datetime(year, first, 5)
        span = (dt.datetime(year, last, 25) - start).days
        for k in range(spec.dates_per_year):
            day = span * (k + 0.5) / spec.dates_per_year + float(rng.uniform(-6, 6))
            out.append(
                start + dt.timedelta(days=round(day), hours=hour, seconds=float(rng.uniform(0, 60)))
            )
    return out


_COG = {"driver": "COG", "compress": "DEFLATE", "blocksize": 256, "overview_count": 1}


def _write_cog(
    path: Path, data: np.ndarray, crs: str, transform: Affine, resampling: str, nodata: int = 0
):
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        _COG,
        width=data.shape[-1],
        height=data.shape[-2],
        count=1,
        dtype=data.dtype.name,
        nodata=nodata,
        crs=crs,
        transform=transform,
        predictor=2,
        overview_resampling=resampling,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


def _observe_date(
    root: Path,
    grid: _SiteGrid,
    mine: scene.MineSite,
    classes,
    when,
    index: int,
    spec: WorldSpec,
    site_index: int,
) -> list[dict[str, Any]]:
    """Render one acquisition over a site's region and write one item per tile."""
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, site_index, 1000 + index]))
    year_index = spec.years.index(when.year)
    fraction = scene.draw_cloud_fraction(rng)
    refl, scl10 = mine.observe(classes[year_index], when.timetuple().tm_yday, fraction, rng)
    scene.add_defects(rng, refl, scl10)
    valid = np.ones(grid.region_shape, bool)
    if grid.site.swath_edge and index % 2 == 1:
        valid = scene.swath_mask(grid.region_shape, rng)
    scl10[~valid] = scene.SCL["no_data"]
    if spec.sensor == "landsat":
        return _landsat_items(root, grid, refl, scl10, valid, when, index)
    change = dt.datetime.fromisoformat(spec.offset_from)
    baseline = _baseline(when, change)
    dn = scene.encode_reflectance(refl, valid, offset=-0.1 if baseline >= "04.00" else 0.0)
    platform = "sentinel-2a" if index % 2 == 0 else "sentinel-2b"
    crs = f"EPSG:{grid.epsg}"
    sun = (
        140.0 if grid.site.lat >= 0 else 40.0,
        90
        - abs(grid.site.lat - 23.4 * np.sin(2 * np.pi * (when.timetuple().tm_yday - 81) / 365.25)),
    )
    items = []
    for code, _, _ in grid.tiles:
        rows, cols, bounds = grid.tile_slices(code)
        tile_valid = valid[rows, cols]
        scl20 = scene.scl_to_20m(scl10[rows, cols])
        observed = scl20 != scene.SCL["no_data"]
        cloudy = np.isin(scl20, scene.SCL_CLOUDY) & observed
        name = stacitems.item_id(platform, code, when)
        folder = Path("cogs", code[:2], code[2], code[3:], str(when.year), str(when.month), name)
        hrefs = {}
        transform10 = Affine(RESOLUTION, 0, bounds[0], 0, -RESOLUTION, bounds[3])
        for b, key in enumerate(scene.BANDS):
            hrefs[key] = str(folder / f"{stacitems.ASSETS[key][0]}.tif")
            _write_cog(root / hrefs[key], dn[b][rows, cols], crs, transform10, "average")
        hrefs["scl"] = str(folder / "SCL.tif")
        _write_cog(root / hrefs["scl"], scl20, crs, transform10 @ Affine.scale(2), "nearest")
        items.append(
            stacitems.make_item(
                tile=code,
                epsg=grid.epsg,
                bounds=bounds,
                footprint=_footprint(tile_valid, bounds, transform10),
                shape=tile_valid.shape,
                when=when,
                platform=platform,
                cloud_cover=100 * cloudy.sum() / max(observed.sum(), 1),
                nodata_percentage=100 * (1 - tile_valid.mean()),
                hrefs=hrefs,
                sun=sun,
                baseline=baseline,
            )
        )
    return items


def _baseline(when: dt.datetime, change: dt.datetime) -> str:
    """The processing baseline of a demo scene: 03.01 before the offset change, then 04.00 for
    its first year, 05.09 and 05.10 after (the real sequence, roughly)."""
    if when < change:
        return "03.01"
    return {0: "04.00", 1: "05.09"}.get(when.year - change.year, "05.10")


def _footprint(tile_valid: np.ndarray, bounds, transform: Affine):
    """The valid-data polygon of a tile (its box when every pixel is valid)."""
    if tile_valid.all():
        return box(*bounds)
    shapes = rasterio.features.shapes(
        tile_valid.astype("uint8"), mask=tile_valid, transform=transform
    )
    return unary_union([shape(g) for g, _ in shapes]).simplify(RESOLUTION)


def _landsat_items(root: Path, grid, refl, scl10, valid, when, index: int) -> list[dict]:
    """One Landsat Collection 2 Level-2 item per tile: 30 m blocks of the 10 m scene."""
    platform = "landsat-8" if index % 2 == 0 else "landsat-9"
    crs = f"EPSG:{grid.epsg}"
    items = []
    for code, _, _ in grid.tiles:
        rows, cols, bounds = grid.tile_slices(code)
        tile_valid = scene.block_mean(valid[rows, cols][None].astype("float32"))[0] == 1
        dn = scene.encode_reflectance(
            scene.block_mean(refl[:, rows, cols]),
            tile_valid,
            scale=stacitems.LANDSAT_SCALE,
            offset=stacitems.LANDSAT_OFFSET,
        )
        qa = scene.scl_to_qa_pixel(scl10[rows, cols])
        qa[~tile_valid] = scene.QA_PIXEL["fill"]
        name = stacitems.landsat_item_id(platform, code, when)
        folder = Path("cogs", code[:2], code[2], code[3:], str(when.year), str(when.month), name)
        transform30 = Affine(30, 0, bounds[0], 0, -30, bounds[3])
        hrefs = {}
        for b, key in enumerate(("blue", "green", "red", "nir08")):
            hrefs[key] = str(folder / f"{stacitems.LANDSAT_ASSETS[key][0]}.tif")
            _write_cog(root / hrefs[key], dn[b], crs, transform30, "average")
        hrefs["qa_pixel"] = str(folder / "QA_PIXEL.tif")
        _write_cog(root / hrefs["qa_pixel"], qa, crs, transform30, "nearest", nodata=1)
        cloudy = (qa & 0b11110) > 0
        items.append(
            stacitems.make_landsat_item(
                tile=code,
                epsg=grid.epsg,
                bounds=bounds,
                footprint=_footprint(tile_valid, bounds, transform30),
                shape=tile_valid.shape,
                when=when,
                platform=platform,
                cloud_cover=100 * float(cloudy[tile_valid].mean()) if tile_valid.any() else 0.0,
                hrefs=hrefs,
            )
        )
    return items


def _write_truth(root: Path, grid: _SiteGrid, classes: list[np.ndarray], spec: WorldSpec):
    """Truth rasters on the site grid, and label polygons drawn from them."""
    import geopandas as gpd
    import pyogrio

    r0, c0, size = grid.window
    transform = Affine(RESOLUTION, 0, grid.bounds[0], 0, -RESOLUTION, grid.bounds[3])
    names = {c.id: c.name for c in DEFAULT_CLASSES}
    rows = []
    for year, cls in zip(spec.years, classes, strict=True):
        truth = cls[r0 : r0 + size, c0 : c0 + size]
        path = root / "truth" / grid.site.site_id / f"{year}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=size,
            height=size,
            count=1,
            dtype="uint8",
            nodata=0,
            crs=f"EPSG:{grid.epsg}",
            transform=transform,
            compress="DEFLATE",
            tiled=True,
        ) as dst:
            dst.write(truth, 1)
            dst.write_colormap(1, _colormap())
            dst.update_tags(1, classes=json.dumps(names))
        for geom, value in rasterio.features.shapes(
            truth, mask=truth > 0, connectivity=4, transform=transform
        ):
            rows.append(
                {
                    "site_id": grid.site.site_id,
                    "year": year,
                    "class": names[int(value)],
                    "class_id": int(value),
                    "geometry": shape(geom),
                }
            )
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=f"EPSG:{grid.epsg}")
    path = root / "labels" / f"{grid.site.site_id}.gpkg"
    path.parent.mkdir(parents=True, exist_ok=True)
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": "2000-01-01T00:00:00Z"})
    try:
        frame.to_file(path, driver="GPKG", layer="labels", engine="pyogrio")
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": None})


def _colormap() -> dict[int, tuple[int, int, int]]:
    cmap = {0: (0, 0, 0)}
    for c in DEFAULT_CLASSES:
        h = c.colour.lstrip("#")
        cmap[c.id] = tuple(int(h[i : i + 2], 16) for i in (0, 2, 4))
    return cmap


def _site_record(grid: _SiteGrid) -> dict[str, Any]:
    s = grid.site
    return {
        "site_id": s.site_id,
        "name": s.name,
        "commodity": s.commodity,
        "climate": s.climate,
        "koppen": s.koppen,
        "country": s.country,
        "epsg": grid.epsg,
        "tiles": ",".join(c for c, _, _ in grid.tiles),
    }


def _write_sites(root: Path, grids: list[_SiteGrid]) -> None:
    features = []
    for g in grids:
        geom = stacitems.lonlat_geometry(box(*g.bounds), g.epsg)
        features.append(
            {"type": "Feature", "properties": _site_record(g), "geometry": mapping(geom)}
        )
    (root / "sites.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": features}, indent=1)
    )
    with open(root / "sites.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, [*_site_record(grids[0]), "lon", "lat", "buffer_m"])
        writer.writeheader()
        for g in grids:
            cx, cy = (g.bounds[0] + g.bounds[2]) / 2, (g.bounds[1] + g.bounds[3]) / 2
            lon, lat = Transformer.from_crs(g.epsg, 4326, always_xy=True).transform(cx, cy)
            writer.writerow(
                {
                    **_site_record(g),
                    "lon": round(lon, 6),
                    "lat": round(lat, 6),
                    "buffer_m": (g.bounds[2] - g.bounds[0]) / 2,
                }
            )


@dataclass(frozen=True)
class World:
    """A demo world on disk. Open one with :func:`open_world`, make one with :func:`generate`."""

    path: Path
    spec: WorldSpec
    summary: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def site_ids(self) -> list[str]:
        return [s.site_id for s in self.spec.demo_sites]

    @property
    def sites(self):
        """The site table as a GeoDataFrame in lon/lat."""
        import geopandas as gpd

        return gpd.read_file(self.path / "sites.geojson", engine="pyogrio")

    @property
    def collection_path(self) -> Path:
        return self.path / "stac" / "collection.json"

    def items(
        self, base_url: str | None = None, *, style: str = "earth-search"
    ) -> list[dict[str, Any]]:
        """STAC item dicts with asset hrefs under ``base_url`` (default: this folder on disk),
        in a catalogue's style (:data:`minecube.demo.stacitems.STYLES`; Sentinel-2 worlds)."""
        base = (base_url or self.path.resolve().as_uri()).rstrip("/")
        fc = json.loads((self.path / "stac" / "items.json").read_text())
        collection = self.collection_path.resolve().as_uri()
        if style != "earth-search":
            if self.spec.sensor != "sentinel-2":
                raise ValueError(f"style={style!r} applies to Sentinel-2 worlds only")
            fc["features"] = [stacitems.restyle(i, style) for i in fc["features"]]
        for item in fc["features"]:
            for asset in item["assets"].values():
                asset["href"] = f"{base}/{asset['href']}"
            for link in item["links"]:
                if link["rel"] == "collection":
                    link["href"] = collection
        return fc["features"]

    def run_config(
        self,
        stac_url: str,
        *,
        out: str | os.PathLike = "demo-output",
        composite: str = "quarter",
        epochs: int = 8,
    ) -> dict[str, Any]:
        """The configuration of :func:`minecube.run` for this world served at ``stac_url``:
        every site and year, a model trained on its labels (the docs' held-out sites when the
        world has them) and the report against its truth rasters, which also label its sample
        (so the intervals' coverage is the estimator's, not the label polygons').

        The model is the best measured on this world within the demo's budget (docs/training.md):
        a U-Net whose EfficientNet-B4 encoder starts from ukis-csmask's Sentinel-2 weights;
        without the ``csmask`` extra, an FPN-ResNet-18 from scratch."""
        from importlib.util import find_spec

        held_out = {"val_site": ["atacama-copper"], "test_site": ["hunter-coal", "ashanti-gold"]}
        chosen = {*held_out["val_site"], *held_out["test_site"]}
        train: dict[str, Any] = {"epochs": epochs}
        if find_spec("ukis_csmask") is not None and find_spec("onnx") is not None:
            train |= {"architecture": "unet", "encoder_name": "efficientnet-b4",
                      "encoder_weights": "csmask-l2a"}  # fmt: skip
        if chosen <= set(self.site_ids) and len(self.site_ids) > len(chosen):
            train |= held_out
        return {
            "sites": str(self.path / "sites.geojson"),
            "search": {
                "catalog": stac_url,
                "collection": json.loads(self.collection_path.read_text())["id"],
                "start": f"{self.spec.years[0]}-01-01",
                "end": f"{self.spec.years[-1]}-12-31",
            },
            "out": str(out),
            "labels": str(self.path / "labels"),
            "cube": {"composite": composite},
            "train": train,
            "report": {
                "title": "minecube demo world",
                "sample": 300,
                "truth": str(self.path / "truth"),
            },
        }

    def truth_path(self, site_id: str, year: int) -> Path:
        return self.path / "truth" / site_id / f"{year}.tif"

    def labels_path(self, site_id: str) -> Path:
        return self.path / "labels" / f"{site_id}.gpkg"

    def truth(self, site_id: str, year: int):
        """The truth raster of a site and year as a DataArray (y, x) with its ``spatial_ref``."""
        import rioxarray

        path = self.truth_path(site_id, year)
        if not path.exists():
            raise DemoWorldError(
                f"no truth for site {site_id!r} in {year}; this world has sites "
                f"{self.site_ids} and years {list(self.spec.years)}"
            )
        return rioxarray.open_rasterio(path, masked=False).squeeze("band", drop=True)


def open_world(path: str | os.PathLike) -> World:
    """Open a demo world written by :func:`generate`.

    Raises :class:`~minecube.errors.DemoWorldError` when the folder is missing or incomplete.

    Examples
    --------
    >>> from minecube.demo import generate, open_world
    >>> _ = generate("/tmp/tiny-world", sites=["hunter-coal"], years=[2022, 2023],
    ...              dates_per_year=2, tile_size=160, site_size=96, overwrite=True)
    >>> world = open_world("/tmp/tiny-world")
    >>> world.site_ids, world.spec.years
    (['hunter-coal'], (2022, 2023))
    """
    root = Path(path)
    manifest = root / _MANIFEST
    if not manifest.exists():
        hint = (
            " (a generation was interrupted; run generate() again)"
            if root.with_name(root.name + ".partial").exists()
            else ""
        )
        raise DemoWorldError(
            f"{str(root)!r} is not a complete demo world: {_MANIFEST} is missing{hint}. "
            f"Create one with `minecube demo generate {root}` or minecube.demo.generate()."
        )
    meta = json.loads(manifest.read_text())
    return World(root, WorldSpec.from_dict(meta["spec"]), meta.get("summary", {}))


def generate(
    path: str | os.PathLike,
    *,
    seed: int = 0,
    years: Sequence[int] = (2022, 2023, 2024),
    dates_per_year: int = 5,
    tile_size: int = 384,
    site_size: int = 256,
    sites: Sequence[str] | int | None = None,
    sensor: str = "sentinel-2",
    offset_from: str = "2022-01-25",
    overwrite: bool = False,
    progress: bool = False,
) -> World:
    """Generate a deterministic synthetic Sentinel-2 L2A archive around fictional mines.

    The world is written to a temporary ``<path>.partial`` folder and renamed when complete, so
    an interrupted run never leaves a folder that looks finished. If ``path`` already holds a
    world with the same parameters it is reused as it is.

    Parameters
    ----------
    path
        Folder to write.
    seed
        Random seed; the same seed and parameters give byte-identical files.
    years
        Calendar years to observe; the mines grow from one year to the next.
    dates_per_year
        Acquisitions per year and site.
    tile_size, site_size
        Tile and site-area widths in 10 m pixels.
    sites
        Subset of :data:`SITES` ids (default: all), or a number of small mines for a
        many-site world (:func:`many_sites`; e.g. ``sites=200, site_size=128, tile_size=160``).
    sensor
        ``"sentinel-2"`` (L2A, 10 m, Earth Search v1 layout) or ``"landsat"`` (Collection 2
        Level-2, 30 m, ``qa_pixel``; ``tile_size`` divisible by 6).
    offset_from
        Sentinel-2: first day whose files carry the +1000 DN offset of baseline 04.00 (default
        the real 2022-01-25; earlier scenes are baseline 03.01 and declare offset 0).
    overwrite
        Replace an existing demo world made with other parameters (a folder that is not a demo
        world is never replaced).
    progress
        Show a progress bar.

    Returns
    -------
    World

    Examples
    --------
    >>> from minecube.demo import generate
    >>> world = generate("/tmp/tiny-world", sites=["hunter-coal"], years=[2022, 2023],
    ...                  dates_per_year=2, tile_size=160, site_size=96, overwrite=True)
    >>> len(world.items())
    8
    """
    spec = WorldSpec(
        seed=seed,
        years=tuple(years),
        dates_per_year=dates_per_year,
        tile_size=tile_size,
        site_size=site_size,
        sites=sites if sites is None or isinstance(sites, int) else tuple(sites),
        sensor=sensor,
        offset_from=offset_from,
    )
    root = Path(path)
    if (root / _MANIFEST).exists():
        existing = open_world(root)
        current = json.loads((root / _MANIFEST).read_text()).get("format") == FORMAT
        if existing.spec == spec and current:
            return existing
        if current and not overwrite:
            raise DemoWorldError(
                f"{str(root)!r} holds a demo world made with {existing.spec}, not {spec}; "
                "pass overwrite=True (CLI: --overwrite) or choose another path."
            )
    elif root.exists() and any(root.iterdir()):
        # never delete a folder that is not a demo world, even with overwrite=True
        raise DemoWorldError(
            f"{str(root)!r} exists and is not a demo world; choose an empty or new folder."
        )
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    summary = _generate_into(tmp, spec, progress)
    (tmp / _MANIFEST).write_text(
        json.dumps(
            {
                "format": FORMAT,
                "minecube_version": __version__,
                "spec": asdict(spec),
                "summary": summary,
            },
            indent=1,
        )
    )
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return open_world(root)


def _generate_into(root: Path, spec: WorldSpec, progress: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    grids, jobs = [], []
    for site_index, site in spec._seeded_sites():
        rng = np.random.default_rng(np.random.SeedSequence([spec.seed, site_index]))
        grid = _site_grid(site, spec, rng)
        grids.append(grid)
        mine = scene.MineSite(
            grid.region_shape,
            grid.window,
            site.commodity,
            site.climate,
            southern=site.lat < 0,
            seed=int(rng.integers(2**31)),
        )
        classes = [mine.class_map(t) for t in range(len(spec.years))]
        _write_truth(root, grid, classes, spec)
        for index, when in enumerate(_acquisition_dates(site, spec, rng)):
            jobs.append((grid, mine, classes, when, index, site_index))
    codes = [c for g in grids for c, _, _ in g.tiles]
    if len(set(codes)) != len(codes):
        raise DemoWorldError(f"tile codes collide: {codes}; change tile_size")
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        futures = [pool.submit(_observe_date, root, *job[:5], spec, job[5]) for job in jobs]
        items = [
            i
            for f in tqdm(futures, desc="demo scenes", unit="scene", disable=not progress)
            for i in f.result()
        ]
    items.sort(key=lambda i: (i["properties"]["datetime"], i["id"]))
    (root / "stac").mkdir()
    (root / "stac" / "items.json").write_text(
        json.dumps({"type": "FeatureCollection", "features": items})
    )
    (root / "stac" / "collection.json").write_text(
        json.dumps(stacitems.make_collection(items), indent=1)
    )
    _write_sites(root, grids)
    return {
        "sites": len(grids),
        "tiles": len(codes),
        "items": len(items),
        "bytes": sum(p.stat().st_size for p in root.rglob("*") if p.is_file()),
    }
