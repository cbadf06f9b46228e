"""pyproject.toml and environment.yml list the same dependencies."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).parent.parent
# PyPI name → conda-forge names, where they differ
CONDA_NAMES = {"torch": ["pytorch"], "dask": ["dask", "distributed"]}


def _conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    entries = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            entries += dep["pip"]
        elif dep not in ("pip",) and not dep.startswith("python"):
            entries.append(dep)
    return {Requirement(e).name: str(Requirement(e).specifier) for e in entries}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = {}
    for dep in project["dependencies"]:
        req = Requirement(dep)
        for name in CONDA_NAMES.get(req.name, [req.name]):
            expected[name] = str(req.specifier)
    assert _conda_requirements() == expected


def test_python_floor_agrees():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert f"python{project['requires-python']}" in env["dependencies"]


def test_version_is_exposed():
    import minecube

    assert minecube.__version__
