"""Synthetic land cover and Sentinel-2 L2A observations around one mine.

Everything here works on a *region*: the rectangle of demo tiles that cover one site, in the
site's UTM grid at 10 m. A region is drawn once per year as a class map (mines grow from year
to year) and then observed on each acquisition date: class spectra with season, texture and
noise, then clouds, cloud shadows, saturated pixels and the scene's nodata edge, and the Scene
Classification Layer (SCL) that goes with them.

Spectra are surface reflectance (0–1) for Sentinel-2 blue (B02), green (B03), red (B04) and NIR
(B08). They are chosen so that some classes are close in RGB and apart in NIR (coal pit vs
natural water, forest vs water, harvested cropland vs waste dump vs bare land, iron-oxide waste
vs red soil), as in real imagery.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from minecube.classes import DEFAULT_CLASSES

C = {c.name: c.id for c in DEFAULT_CLASSES}
N_CLASSES = max(C.values()) + 1
BANDS = ("blue", "green", "red", "nir")

# SCL codes of the Sentinel-2 L2A processor (ESA Sen2Cor).
SCL = {
    "no_data": 0,
    "saturated_or_defective": 1,
    "dark_area_pixels": 2,
    "cloud_shadows": 3,
    "vegetation": 4,
    "not_vegetated": 5,
    "water": 6,
    "unclassified": 7,
    "cloud_medium_probability": 8,
    "cloud_high_probability": 9,
    "thin_cirrus": 10,
    "snow": 11,
}
SCL_CLOUDY = (SCL["cloud_medium_probability"], SCL["cloud_high_probability"], SCL["thin_cirrus"])

# Surface reflectance (blue, green, red, nir) of the classes that do not change with season,
# with commodity-specific looks for the mining classes.
_MINING_SPECTRA = {
    "default": {
        "open_pit": (0.120, 0.140, 0.160, 0.190),
        "waste_dump": (0.105, 0.125, 0.150, 0.205),
        "tailings": (0.215, 0.245, 0.265, 0.280),
        "mine_water": (0.070, 0.100, 0.090, 0.040),
        "plant": (0.130, 0.140, 0.150, 0.180),
    },
    "coal": {  # dark coal seams and spoil; sediment-laden settling ponds
        "open_pit": (0.050, 0.055, 0.060, 0.075),
        "waste_dump": (0.075, 0.085, 0.095, 0.130),
        "tailings": (0.090, 0.095, 0.100, 0.110),
        "mine_water": (0.075, 0.095, 0.100, 0.050),
    },
    "iron ore": {  # red iron-oxide benches and waste
        "open_pit": (0.070, 0.100, 0.175, 0.235),
        "waste_dump": (0.080, 0.110, 0.200, 0.270),
    },
    "bauxite": {  # orange-red lateritic pit floors, red mud tailings
        "open_pit": (0.080, 0.100, 0.160, 0.215),
        "tailings": (0.100, 0.120, 0.190, 0.230),
    },
    "copper": {  # grey porphyry benches, turquoise pit lake, bright dry tailings
        "mine_water": (0.060, 0.105, 0.075, 0.025),
    },
}
_LAND_SPECTRA = {
    "bare_land": (0.100, 0.140, 0.190, 0.260),
    "urban": (0.095, 0.105, 0.115, 0.165),
    "water": (0.055, 0.065, 0.045, 0.020),
}
_BARE_BY_CLIMATE = {
    "arid": (0.090, 0.125, 0.195, 0.265),  # red desert soil: close to iron-oxide waste in RGB
    "tropical": (0.085, 0.105, 0.150, 0.235),  # laterite
}
# Green and senescent vegetation per climate, and how far the dry season moves between them.
_VEGETATION = {
    "tropical": ((0.030, 0.060, 0.035, 0.330), (0.040, 0.070, 0.060, 0.270), 0.4),
    "temperate": ((0.035, 0.065, 0.040, 0.320), (0.050, 0.080, 0.085, 0.220), 0.8),
    "continental": ((0.025, 0.050, 0.030, 0.300), (0.040, 0.060, 0.060, 0.200), 1.0),
    "arid": ((0.070, 0.100, 0.110, 0.240), (0.090, 0.120, 0.160, 0.220), 0.7),
}
_CROP_GREEN = (0.040, 0.080, 0.045, 0.380)
_CROP_SOIL = (0.090, 0.115, 0.145, 0.220)
_CLOUD = (0.46, 0.45, 0.44, 0.47)
# Relative amplitude of static spatial texture per class id.
_TEXTURE = np.zeros(N_CLASSES, "float32")
for _name, _amp in {
    "open_pit": 0.10,
    "waste_dump": 0.12,
    "tailings": 0.05,
    "mine_water": 0.04,
    "plant": 0.18,
    "vegetation": 0.08,
    "cropland": 0.05,
    "bare_land": 0.10,
    "urban": 0.22,
    "water": 0.04,
}.items():
    _TEXTURE[C[_name]] = _amp
# Background mix per climate: fractions of vegetation, cropland and bare land.
_MIX = {
    "tropical": {"vegetation": 0.70, "cropland": 0.24, "bare_land": 0.06},
    "temperate": {"vegetation": 0.42, "cropland": 0.52, "bare_land": 0.06},
    "continental": {"vegetation": 0.68, "cropland": 0.26, "bare_land": 0.06},
    "arid": {"vegetation": 0.20, "cropland": 0.0, "bare_land": 0.80},
}


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-correlated noise with zero mean and unit standard deviation."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype("float32"), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-12)


@dataclass(frozen=True)
class _Blob:
    """An irregular ellipse that grows by scaling its radius (so growth is nested)."""

    cy: float
    cx: float
    radius: float
    aspect: float
    angle: float
    harmonics: tuple[tuple[int, float, float], ...]

    def normalised_radius(self, yy: np.ndarray, xx: np.ndarray, scale: float) -> np.ndarray:
        """Distance from the centre divided by the boundary radius (≤ 1 is inside)."""
        dy, dx = yy - self.cy, xx - self.cx
        c, s = np.cos(self.angle), np.sin(self.angle)
        u = dx * c + dy * s
        v = (-dx * s + dy * c) * self.aspect
        rho = np.hypot(u, v)
        theta = np.arctan2(v, u)
        edge = np.ones_like(rho)
        for k, amp, phase in self.harmonics:
            edge += amp * np.cos(k * theta + phase)
        return rho / (self.radius * scale * edge)


def _random_blob(rng, cy, cx, radius, aspect=1.0) -> _Blob:
    harmonics = tuple(
        (k, float(rng.uniform(0.02, 0.10)), float(rng.uniform(0, 2 * np.pi))) for k in (2, 3, 5)
    )
    return _Blob(cy, cx, radius, aspect, float(rng.uniform(0, np.pi)), harmonics)


@dataclass
class MineSite:
    """The static layout of one region: background, mine features and how they grow.

    Parameters are pixel positions in the region grid. ``window`` is the site's own
    (row0, col0, size) inside the region; mine features stay inside it.
    """

    shape: tuple[int, int]
    window: tuple[int, int, int]
    commodity: str
    climate: str
    southern: bool
    seed: int
    _yy: np.ndarray = field(init=False, repr=False)
    _xx: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        h, w = self.shape
        self._yy, self._xx = np.mgrid[0:h, 0:w].astype("float32")
        self._background = self._draw_background(rng)
        self._draw_mine(rng)
        self._texture = smooth_noise(rng, self.shape, 1.2)
        self._greenness_offset = 0.15 * smooth_noise(rng, self.shape, 6.0)
        self._lut = self._spectra_lut()

    # ----------------------------------------------------------------- land cover
    def _draw_background(self, rng: np.random.Generator) -> np.ndarray:
        h, w = self.shape
        yy, xx = self._yy, self._xx
        cls = np.full(self.shape, C["vegetation"], "uint8")
        n1 = smooth_noise(rng, self.shape, 22.0)
        mix = _MIX[self.climate]
        q_bare = np.quantile(n1, mix["bare_land"])
        q_crop = np.quantile(n1, mix["bare_land"] + mix["cropland"])
        cls[n1 <= q_crop] = C["cropland"]
        cls[n1 <= q_bare] = C["bare_land"]
        if self.climate == "arid":
            # centre-pivot irrigation circles
            for _ in range(2):
                cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(15, 25)
                cls[np.hypot(yy - cy, xx - cx) <= r] = C["cropland"]
        # field parcels: a rotated grid, each parcel with its own sowing date
        angle = rng.uniform(-0.4, 0.4)
        u = xx * np.cos(angle) + yy * np.sin(angle)
        v = -xx * np.sin(angle) + yy * np.cos(angle)
        pu, pv = rng.uniform(18, 34), rng.uniform(12, 24)
        iu, iv = np.floor(u / pu).astype("int64"), np.floor(v / pv).astype("int64")
        self._parcel = ((iu - iu.min()) * 997 + (iv - iv.min())) % 4096
        self._sowing = rng.uniform(-45, 45, 4096).astype("float32")
        # rivers and lakes
        if self.climate != "arid":
            y0, amp, wavelength = (
                rng.uniform(0.15, 0.85) * h,
                rng.uniform(10, 30),
                rng.uniform(150, 300),
            )
            centre = y0 + amp * np.sin(2 * np.pi * xx / wavelength + rng.uniform(0, 6.3))
            cls[np.abs(yy - centre) <= rng.uniform(2.0, 4.5)] = C["water"]
        if self.climate in ("continental", "temperate"):
            n2 = smooth_noise(rng, self.shape, 12.0)
            cls[n2 > np.quantile(n2, 0.96)] = C["water"]
        # a town with a street grid
        ty, tx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        town = _random_blob(rng, ty, tx, rng.uniform(18, 30))
        cls[town.normalised_radius(yy, xx, 1.0) <= 1] = C["urban"]
        return cls

    def _draw_mine(self, rng: np.random.Generator) -> None:
        r0, c0, size = self.window
        cy, cx = r0 + size / 2 + rng.uniform(-8, 8), c0 + size / 2 + rng.uniform(-8, 8)
        strip = self.commodity == "coal"
        self._pit_radius = size * rng.uniform(0.13, 0.16)
        self._pit = _random_blob(rng, cy, cx, self._pit_radius, aspect=2.2 if strip else 1.0)
        self._pit_growth = rng.uniform(0.12, 0.18)  # radius growth per year
        self._bench_spacing = rng.uniform(0.12, 0.18)
        lake = self.commodity in ("copper", "gold", "coal")
        self._lake_from = 1 if lake else None
        self._lake = _Blob(cy, cx, self._pit_radius * 0.35, 1.0, 0.0, self._pit.harmonics[:1])
        base = rng.uniform(0, 2 * np.pi)
        d = self._pit_radius
        self._dumps = [
            _random_blob(
                rng,
                cy + 1.75 * d * np.sin(base + k * 2.1),
                cx + 1.75 * d * np.cos(base + k * 2.1),
                d * rng.uniform(0.45, 0.6),
            )
            for k in range(2)
        ]
        self._dump_growth = rng.uniform(0.12, 0.2)
        a_tsf = base + 4.2
        self._tsf = (cy + 2.2 * d * np.sin(a_tsf), cx + 2.2 * d * np.cos(a_tsf))
        self._tsf_half = (d * rng.uniform(0.45, 0.6), d * rng.uniform(0.6, 0.8))
        self._tsf_axis = rng.uniform(0, np.pi)
        a_plant = base + 1.05
        self._plant = (cy + 1.45 * d * np.sin(a_plant), cx + 1.45 * d * np.cos(a_plant))
        self._plant_boxes = [
            (rng.uniform(-6, 6), rng.uniform(-6, 6), rng.uniform(2, 5), rng.uniform(3, 7))
            for _ in range(4)
        ]
        self._roads = [((cy, cx), (b.cy, b.cx), 0) for b in self._dumps]
        self._roads += [((cy, cx), self._plant, 0), (self._plant, self._tsf, 1)]

    def class_map(self, year_index: int) -> np.ndarray:
        """Land-cover class ids of the region in a given year (0-based)."""
        t = year_index
        yy, xx = self._yy, self._xx
        cls = self._background.copy()
        for p0, p1, since in self._roads:
            if t >= since:
                cls[_segment_distance(yy, xx, p0, p1) <= 1.1] = C["plant"]
        for dump in self._dumps:
            cls[dump.normalised_radius(yy, xx, 1 + self._dump_growth * t) <= 1] = C["waste_dump"]
        if t >= 1:  # the tailings facility is built in the second year and fills
            cy, cx = self._tsf
            c, s = np.cos(self._tsf_axis), np.sin(self._tsf_axis)
            u = (xx - cx) * c + (yy - cy) * s
            v = -(xx - cx) * s + (yy - cy) * c
            hu, hv = self._tsf_half[1], self._tsf_half[0]
            outer = (np.abs(u) <= hu) & (np.abs(v) <= hv)
            inner = (np.abs(u) <= hu - 2) & (np.abs(v) <= hv - 2)
            cls[outer] = C["plant"]  # embankment
            cls[inner] = C["mine_water"]
            fill = min(0.25 + 0.25 * (t - 1), 0.85)
            cls[inner & (u <= -hu + 2 * hu * fill)] = C["tailings"]
        py, px = self._plant
        for dy, dx, hh, hw in self._plant_boxes:
            cls[(np.abs(yy - py - dy) <= hh) & (np.abs(xx - px - dx) <= hw)] = C["plant"]
        rho = self._pit.normalised_radius(yy, xx, 1 + self._pit_growth * t)
        cls[rho <= 1] = C["open_pit"]
        if self._lake_from is not None and t >= self._lake_from:
            lake_scale = 1 + 0.5 * (t - self._lake_from)
            cls[(self._lake.normalised_radius(yy, xx, lake_scale) <= 1) & (rho <= 0.8)] = C[
                "mine_water"
            ]
        # mining features never leave the site window
        r0, c0, size = self.window
        outside = np.ones(self.shape, bool)
        outside[r0 : r0 + size, c0 : c0 + size] = False
        mining = np.isin(cls, [c.id for c in DEFAULT_CLASSES.mining])
        cls[outside & mining] = self._background[outside & mining]
        return cls

    # ----------------------------------------------------------------- observation
    def _spectra_lut(self) -> np.ndarray:
        lut = np.zeros((N_CLASSES, 4), "float32")
        mining = dict(_MINING_SPECTRA["default"])
        mining.update(_MINING_SPECTRA.get(self.commodity, {}))
        for name, spec in {**mining, **_LAND_SPECTRA}.items():
            lut[C[name]] = spec
        lut[C["bare_land"]] = _BARE_BY_CLIMATE.get(self.climate, _LAND_SPECTRA["bare_land"])
        return lut

    def greenness(self, day_of_year: float) -> float:
        """Seasonal greenness 0 (dry season) – 1 (peak of the growing season)."""
        peak = 15.0 if self.southern else 196.0
        return float(0.5 + 0.5 * np.cos(2 * np.pi * (day_of_year - peak) / 365.25))

    def surface_reflectance(self, cls: np.ndarray, day_of_year: float, rng) -> np.ndarray:
        """Cloud-free surface reflectance (4, h, w) of a class map on one date."""
        refl = self._lut[cls]  # (h, w, 4)
        g = self.greenness(day_of_year)
        green, dry, amplitude = (np.asarray(v, "float32") for v in _VEGETATION[self.climate])
        veg = cls == C["vegetation"]
        d = np.clip(amplitude * (1 - g) + self._greenness_offset[veg], 0, 1)[:, None]
        refl[veg] = green * (1 - d) + dry * d
        crop = cls == C["cropland"]
        peak = 15.0 if self.southern else 196.0
        sowing = peak - 60.0 + self._sowing[self._parcel[crop]]
        phase = np.mod(day_of_year - sowing, 365.25)  # days since sowing
        gc = np.where(phase < 120, np.clip(1.6 * np.sin(np.pi * phase / 120), 0, 1), 0)[:, None]
        refl[crop] = np.asarray(_CROP_GREEN) * gc + np.asarray(_CROP_SOIL) * (1 - gc)
        factor = 1 + _TEXTURE[cls] * self._texture
        pit = cls == C["open_pit"]
        rho = self._pit.normalised_radius(self._yy[pit], self._xx[pit], 1.0)
        factor[pit] *= 1 + 0.08 * np.cos(2 * np.pi * rho / self._bench_spacing)  # benches
        refl = refl * factor[..., None]
        refl += rng.normal(0, 0.0025, refl.shape).astype("float32")
        return np.clip(refl, 0.0, 1.0).transpose(2, 0, 1)

    def observe(
        self, cls: np.ndarray, day_of_year: float, cloud_fraction: float, rng
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-of-canopy reflectance with clouds, and SCL codes, both on the 10 m grid."""
        refl = self.surface_reflectance(cls, day_of_year, rng)
        scl = np.full(self.shape, SCL["not_vegetated"], "uint8")
        nir, red = refl[3], refl[2]
        ndvi = (nir - red) / (nir + red + 1e-6)
        scl[refl[:3].mean(0) < 0.055] = SCL["dark_area_pixels"]
        scl[ndvi > 0.4] = SCL["vegetation"]
        scl[np.isin(cls, (C["water"], C["mine_water"]))] = SCL["water"]
        if cloud_fraction > 0:
            alpha = _cloud_opacity(rng, self.shape, cloud_fraction)
            shift = (int(rng.integers(8, 20)), int(rng.integers(-20, 20)))
            shadow = np.roll(alpha, shift, axis=(0, 1)) if cloud_fraction < 1 else 0 * alpha
            refl *= 1 - 0.6 * shadow[None] * (alpha[None] < 0.05)
            scl[(shadow > 0.3) & (alpha < 0.05)] = SCL["cloud_shadows"]
            cloud = np.asarray(_CLOUD, "float32")[:, None, None] * (1 + 0.05 * self._texture[None])
            refl = refl * (1 - alpha) + cloud * alpha
            scl[alpha > 0.05] = SCL["cloud_medium_probability"]
            scl[alpha > 0.5] = SCL["cloud_high_probability"]
        if rng.random() < 0.3:  # thin cirrus veil
            cirrus = np.clip(smooth_noise(rng, self.shape, 30.0) - 1.0, 0, 1) * 0.12
            refl += cirrus[None] * 0.4
            scl[(cirrus > 0.02) & (scl < SCL["cloud_medium_probability"])] = SCL["thin_cirrus"]
        return refl, scl


def _segment_distance(yy, xx, p0, p1) -> np.ndarray:
    (y0, x0), (y1, x1) = p0, p1
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / (dy * dy + dx * dx + 1e-9), 0, 1)
    return np.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx))


def _cloud_opacity(rng, shape, fraction: float) -> np.ndarray:
    """Cloud opacity 0–1 covering about ``fraction`` of the region, soft at the edges."""
    if fraction >= 1:
        return np.ones(shape, "float32")
    field_ = smooth_noise(rng, shape, float(rng.uniform(10, 25)))
    threshold = np.quantile(field_, 1 - fraction)
    return np.clip((field_ - threshold) / 0.6, 0, 1).astype("float32")


def draw_cloud_fraction(rng: np.random.Generator) -> float:
    """Scene cloud fraction: mostly clear, some partly cloudy, a few overcast."""
    u = rng.random()
    if u < 0.45:
        return 0.0
    if u < 0.75:
        return float(rng.uniform(0.05, 0.35))
    if u < 0.92:
        return float(rng.uniform(0.35, 0.8))
    return 1.0


def scl_to_20m(scl: np.ndarray) -> np.ndarray:
    """Aggregate a 10 m SCL to 20 m, keeping the most restrictive code of each 2×2 block."""
    order = np.array([0, 9, 8, 10, 3, 1, 6, 2, 4, 5, 7, 11], "uint8")  # most restrictive first
    rank = np.empty(256, "uint8")
    rank[order] = np.arange(order.size)
    h, w = scl.shape
    blocks = rank[scl].reshape(h // 2, 2, w // 2, 2)
    return order[blocks.min(axis=(1, 3))]


def add_defects(rng, refl: np.ndarray, scl: np.ndarray) -> None:
    """Occasionally saturate a short detector stripe (in place), marked SCL 1."""
    if rng.random() < 0.15:
        h, w = scl.shape
        r = 2 * int(rng.integers(0, h // 2))
        c = 2 * int(rng.integers(0, max(1, w // 2 - 40)))
        refl[:, r : r + 2, c : c + 40] = np.inf
        scl[r : r + 2, c : c + 40] = SCL["saturated_or_defective"]


def swath_mask(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Valid-data mask of a scene at the edge of its orbit's swath (a straight diagonal edge)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    angle = rng.uniform(0.2, 0.5)  # the swath edge runs at a slant across the tile
    proj = xx * np.cos(angle) + yy * np.sin(angle)
    return proj <= np.quantile(proj, rng.uniform(0.55, 0.85))


def encode_reflectance(
    refl: np.ndarray, valid: np.ndarray, *, scale: float = 1e-4, offset: float = -0.1
) -> np.ndarray:
    """Reflectance → digital numbers, DN = (ρ − offset) / scale, nodata 0.

    Sentinel-2 L2A baseline ≥ 04.00: scale 0.0001, offset −0.1 (DN carry +1000); before it
    offset 0. Landsat Collection 2 Level-2: scale 2.75e-5, offset −0.2.
    """
    dn = np.round((np.nan_to_num(refl, posinf=10.0) - offset) / scale)
    dn = np.clip(dn, 1, 65535).astype("uint16")
    dn[:, ~valid] = 0
    return dn


# Landsat QA_PIXEL words for the SCL classes: confidence bits low, then the class's own bits.
_QA_BASE = (1 << 8) | (1 << 10) | (1 << 12) | (1 << 14)
QA_PIXEL = {
    "clear": _QA_BASE | (1 << 6),
    "water": _QA_BASE | (1 << 6) | (1 << 7),
    "cloud": _QA_BASE | (1 << 1) | (1 << 3) | (3 << 8),
    "shadow": _QA_BASE | (1 << 4) | (3 << 10),
    "cirrus": _QA_BASE | (1 << 2) | (3 << 14),
    "snow": _QA_BASE | (1 << 5) | (3 << 12),
    "dilated": _QA_BASE | (1 << 1),
    "fill": 1,
}


def scl_to_qa_pixel(scl: np.ndarray, factor: int = 3) -> np.ndarray:
    """A 10 m SCL as Landsat ``QA_PIXEL`` words at ``factor`` × 10 m (most restrictive code)."""
    order = np.array([0, 9, 8, 10, 3, 1, 6, 2, 4, 5, 7, 11], "uint8")
    rank = np.empty(256, "uint8")
    rank[order] = np.arange(order.size)
    h, w = scl.shape
    worst = order[rank[scl].reshape(h // factor, factor, w // factor, factor).min(axis=(1, 3))]
    words = np.full(worst.shape, QA_PIXEL["clear"], "uint16")
    for codes, word in (
        ((SCL["no_data"],), "fill"),
        ((SCL["cloud_medium_probability"], SCL["cloud_high_probability"]), "cloud"),
        ((SCL["thin_cirrus"],), "cirrus"),
        ((SCL["cloud_shadows"],), "shadow"),
        ((SCL["snow"],), "snow"),
        ((SCL["water"],), "water"),
        ((SCL["saturated_or_defective"],), "dilated"),
    ):
        words[np.isin(worst, codes)] = QA_PIXEL[word]
    return words


def block_mean(refl: np.ndarray, factor: int = 3) -> np.ndarray:
    """(band, y, x) reflectance averaged over ``factor`` × ``factor`` blocks (a coarser sensor)."""
    b, h, w = refl.shape
    return refl.reshape(b, h // factor, factor, w // factor, factor).mean(axis=(2, 4))
