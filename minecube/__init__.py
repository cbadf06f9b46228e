"""minecube: map the footprint of mines in multispectral satellite image cubes."""

__version__ = "0.1.0.dev0"

from minecube import accessor as _accessor  # noqa: F401 - registers cube.minecube
from minecube.pipeline import run

__all__ = ["__version__", "run"]
