"""Land-cover classes of mining footprints.

The default schema follows the features of the global mining land-use maps of Tang & Werner
(2023): open pits, waste rock dumps, tailings, mine water and processing plant / infrastructure,
set against the land around mines. Class ids are what rasters store; ``0`` means *no label*
(unlabelled or no valid observation) and is never a class.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BACKGROUND",
    "DEFAULT_CLASSES",
    "IGNORE_INDEX",
    "NODATA_FLAG",
    "ClassSchema",
    "LandCoverClass",
    "read_schema",
]

IGNORE_INDEX = 255
"""Training-target value of pixels without a label; losses and metrics skip it."""
NODATA_FLAG = "no_data"
"""The CF flag meaning of the no-label value in stored rasters (:meth:`ClassSchema.cf_attrs`)."""


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
    ignore: tuple[int, ...] = ()
    """Other raster values that mean *no label* (a published map's "unclassified" or "cloud"
    code): never a class, never counted, never refused as unknown."""

    def __post_init__(self) -> None:
        ids = [c.id for c in self.classes]
        names = [c.name for c in self.classes]
        if len(set(ids)) != len(ids) or len(set(names)) != len(names):
            raise ValueError(f"class ids and names must be unique, got ids={ids}, names={names}")
        if self.nodata in ids:
            raise ValueError(f"nodata value {self.nodata} is also a class id; pick another nodata")
        if not all(0 <= i < IGNORE_INDEX for i in [*ids, self.nodata]):
            raise ValueError(
                f"class ids and nodata must lie in 0–254 ({IGNORE_INDEX} marks unlabelled "
                f"pixels in training), got ids {ids} and nodata {self.nodata}"
            )
        clash = sorted(set(self.ignore) & set(ids))
        if clash or not all(0 <= i <= IGNORE_INDEX for i in self.ignore):
            raise ValueError(
                f"ignore values {list(self.ignore)} must be 0–255 and not class ids ({clash})"
            )

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

    @property
    def background(self) -> LandCoverClass | None:
        """The class named ``background`` (or ``other``), if the schema has one."""
        return next((c for c in self.classes if c.name in ("background", "other")), None)

    def same_classes(self, other: ClassSchema) -> bool:
        """Whether ``other`` gives every id the same class name (colours aside)."""
        return [(c.id, c.name) for c in self] == [(c.id, c.name) for c in other]

    def describe(self) -> str:
        """``1=open_pit, 2=waste_dump, …`` for messages."""
        return ", ".join(f"{c.id}={c.name}" for c in self)

    def subset(self, names, *, background: bool = False) -> ClassSchema:
        """A schema of some of these classes (ids kept), plus :data:`BACKGROUND` if asked:
        a binary tailings mask is ``DEFAULT_CLASSES.subset(["tailings"], background=True)``.

        >>> DEFAULT_CLASSES.subset(["tailings"], background=True).describe()
        '3=tailings, 11=background'
        """
        names = list(names)
        wanted = [n for n in names if n not in ("background", "other")]
        classes = [self[n] for n in wanted]
        if background or len(wanted) < len(names):
            if self.background is not None:
                classes.append(self.background)
            elif BACKGROUND.id in [c.id for c in classes]:
                raise ValueError(f"class id {BACKGROUND.id} is taken; add a background class")
            else:
                classes.append(BACKGROUND)
        return ClassSchema(tuple(classes), nodata=self.nodata, ignore=self.ignore)

    def to_index(self, ids: np.ndarray) -> np.ndarray:
        """Class ids → model output indices ``0 … len(self) - 1``; anything else → IGNORE_INDEX.

        >>> DEFAULT_CLASSES.to_index(np.array([0, 1, 10, 77]))
        array([255,   0,   9, 255], dtype=uint8)
        """
        lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        lut[self.ids] = np.arange(len(self), dtype=np.uint8)
        return lut[np.asarray(ids).astype(np.uint8, copy=False)]

    def to_ids(self, index: np.ndarray) -> np.ndarray:
        """Model output indices → class ids; IGNORE_INDEX → ``nodata``."""
        lut = np.full(256, self.nodata, dtype=np.uint8)
        lut[: len(self)] = self.ids
        return lut[np.asarray(index).astype(np.uint8, copy=False)]

    def cf_attrs(self, *, nodata_flag: bool = False) -> dict[str, Any]:
        """CF ``flag_values``/``flag_meanings`` attributes of a class-id raster.

        With ``nodata_flag``, the no-label value is the first flag, ``no_data``, and also the
        ``nodata`` attribute (rioxarray reads it): what a stored raster carries, so that plain
        xarray reads it as integer classes (no ``_FillValue`` mask turning it into floats) and
        still knows what every value means. :meth:`from_cf_attrs` reads both forms.

        >>> DEFAULT_CLASSES.cf_attrs(nodata_flag=True)["flag_meanings"].split()[:2]
        ['no_data', 'open_pit']
        """
        flags = [(c.id, c.name, c.colour) for c in self.classes]
        if nodata_flag:
            flags.insert(0, (self.nodata, NODATA_FLAG, "#00000000"))
        ids, names, colours = zip(*flags, strict=True)
        return {
            "flag_values": list(ids),
            "flag_meanings": " ".join(names),
            "flag_colors": " ".join(colours),
            "mining_classes": " ".join(c.name for c in self.mining),
        } | ({"nodata": self.nodata} if nodata_flag else {})

    @classmethod
    def from_cf_attrs(cls, attrs: dict[str, Any], *, nodata: int | None = None) -> ClassSchema:
        """The schema written by :meth:`cf_attrs` into a raster's attributes.

        Classes missing from ``mining_classes`` are not mining; colours default to grey. Raises
        ``ValueError`` when the attributes have no ``flag_values``/``flag_meanings``.

        >>> ClassSchema.from_cf_attrs(DEFAULT_CLASSES.cf_attrs()) == DEFAULT_CLASSES
        True
        >>> ClassSchema.from_cf_attrs(DEFAULT_CLASSES.cf_attrs(nodata_flag=True)) == DEFAULT_CLASSES
        True
        """
        if "flag_values" not in attrs or "flag_meanings" not in attrs:
            raise ValueError(
                "the raster has no flag_values/flag_meanings attributes naming its classes; "
                "pass schema= (minecube.classes.DEFAULT_CLASSES or read_schema(...))"
            )
        ids = np.atleast_1d(attrs["flag_values"]).astype(int).tolist()
        names = str(attrs["flag_meanings"]).split()
        colours = str(attrs.get("flag_colors", "")).split() or ["#808080"] * len(ids)
        mining = set(str(attrs.get("mining_classes", "")).split())
        if not len(ids) == len(names) == len(colours):
            raise ValueError(
                f"flag_values {ids} and flag_meanings {names} (and flag_colors) differ in length"
            )
        flags = list(zip(ids, names, colours, strict=True))
        flagged = [i for i, n, _ in flags if n == NODATA_FLAG]  # cf_attrs(nodata_flag=True)
        known = {c.name: c.description for c in DEFAULT_CLASSES}
        classes = tuple(
            LandCoverClass(i, n, c, n in mining, known.get(n, ""))
            for i, n, c in flags
            if n != NODATA_FLAG
        )
        if nodata is None:
            nodata = flagged[0] if flagged else attrs.get("_FillValue", attrs.get("nodata", 0))
        return cls(classes, nodata=int(nodata))

    def to_dict(self) -> dict[str, Any]:
        d = {"nodata": self.nodata, "classes": [asdict(c) for c in self.classes]}
        return d | ({"ignore": list(self.ignore)} if self.ignore else {})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassSchema:
        """A schema from ``{"nodata": 0, "classes": [{"id": 1, "name": …}, …]}``."""
        if not isinstance(d, dict) or not isinstance(d.get("classes"), list) or not d["classes"]:
            raise ValueError(
                "a class schema needs a non-empty 'classes' list of {id, name, colour, is_mining}"
                f" entries, got {d!r:.200}"
            )
        classes = []
        for i, c in enumerate(d["classes"]):
            missing = {"id", "name"} - set(c)
            unknown = set(c) - {"id", "name", "colour", "is_mining", "description"}
            if missing or unknown:
                raise ValueError(
                    f"class #{i} ({c!r:.80}): missing keys {sorted(missing)}, unknown keys "
                    f"{sorted(unknown)}; expected id, name, colour, is_mining, description"
                )
            classes.append(
                LandCoverClass(
                    id=int(c["id"]),
                    name=str(c["name"]),
                    colour=str(c.get("colour", "#808080")),
                    is_mining=bool(c.get("is_mining", False)),
                    description=str(c.get("description", "")),
                )
            )
        ignore = tuple(int(v) for v in d.get("ignore", ()))
        return cls(tuple(classes), nodata=int(d.get("nodata", 0)), ignore=ignore)


BACKGROUND = LandCoverClass(
    11, "background", "#f0f0f0", False, "Everything that is not one of the labelled classes"
)
"""The class of a binary mask's 0: what :meth:`ClassSchema.subset` adds for ``background``."""

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


def read_schema(path: str | os.PathLike) -> ClassSchema:
    r"""Read a class schema from a JSON or YAML file.

    Parameters
    ----------
    path
        ``.json``, ``.yaml`` or ``.yml`` file holding ``nodata`` (optional, default 0) and a
        ``classes`` list of ``{id, name, colour, is_mining, description}``.

    Examples
    --------
    A single-class schema, as for the global mining polygons of Maus et al. (2022):

    >>> from pathlib import Path
    >>> _ = Path("/tmp/maus.yaml").write_text(
    ...     "classes:\n  - {id: 1, name: mine, colour: '#d95f02', is_mining: true}\n")
    >>> read_schema("/tmp/maus.yaml").names
    ['mine']
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"class schema file {str(path)!r} does not exist")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    elif path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"class schema {str(path)!r}: expected a .json, .yaml or .yml file")
    try:
        return ClassSchema.from_dict(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
