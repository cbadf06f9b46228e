"""Land-cover classes of mining footprints.

The default schema follows the features of the global mining land-use maps of Tang & Werner
(2023): open pits, waste rock dumps, tailings, mine water and processing plant / infrastructure,
set against the land around mines. Class ids are what rasters store; ``0`` means *no label*
(unlabelled or no valid observation) and is never a class.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_CLASSES", "ClassSchema", "LandCoverClass"]


@dataclass(frozen=True)
class LandCoverClass:
    """One land-cover class."""

    id: int
    """Value stored in label and prediction rasters (1–254)."""
    name: str
    """Short snake_case name, used as the ``class`` column of label polygons."""
    colour: str
    """Hex colour for maps."""
    is_mining: bool
    """Whether the class is part of the mining footprint."""
    description: str = ""


@dataclass(frozen=True)
class ClassSchema:
    """An ordered set of land-cover classes with a no-label value.

    Examples
    --------
    >>> from minecube.classes import DEFAULT_CLASSES
    >>> DEFAULT_CLASSES["open_pit"].id
    1
    >>> [c.name for c in DEFAULT_CLASSES.mining]
    ['open_pit', 'waste_dump', 'tailings', 'mine_water', 'plant']
    """

    classes: tuple[LandCoverClass, ...]
    nodata: int = 0
    """Raster value for pixels without a label or a valid observation."""

    def __post_init__(self) -> None:
        ids = [c.id for c in self.classes]
        names = [c.name for c in self.classes]
        if len(set(ids)) != len(ids) or len(set(names)) != len(names):
            raise ValueError(f"class ids and names must be unique, got ids={ids}, names={names}")
        if self.nodata in ids:
            raise ValueError(f"nodata value {self.nodata} is also a class id; pick another nodata")
        if not all(0 <= i <= 255 for i in [*ids, self.nodata]):
            raise ValueError(f"class ids and nodata must fit in uint8 (0–255), got {ids}")

    def __getitem__(self, name: str) -> LandCoverClass:
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(f"unknown class {name!r}; known classes: {', '.join(self.names)}")

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self):
        return iter(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def ids(self) -> list[int]:
        return [c.id for c in self.classes]

    @property
    def mining(self) -> list[LandCoverClass]:
        return [c for c in self.classes if c.is_mining]


DEFAULT_CLASSES = ClassSchema(
    (
        LandCoverClass(1, "open_pit", "#8c510a", True, "Excavated pit floor, benches and walls"),
        LandCoverClass(2, "waste_dump", "#d8b365", True, "Waste rock and overburden dumps"),
        LandCoverClass(3, "tailings", "#f6e8c3", True, "Tailings storage facilities and beaches"),
        LandCoverClass(4, "mine_water", "#35978f", True, "Pit lakes, process and tailings ponds"),
        LandCoverClass(5, "plant", "#762a83", True, "Processing plant, infrastructure, haul roads"),
        LandCoverClass(6, "vegetation", "#1b7837", False, "Forest, shrub and grassland"),
        LandCoverClass(7, "cropland", "#a6dba0", False, "Cultivated fields"),
        LandCoverClass(8, "bare_land", "#bababa", False, "Natural bare soil and rock"),
        LandCoverClass(9, "urban", "#e7298a", False, "Settlements and their roads"),
        LandCoverClass(10, "water", "#2166ac", False, "Rivers and natural lakes"),
    )
)
