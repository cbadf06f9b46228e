"""The notebooks run top to bottom on the demo world, in order, in a fresh kernel each."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


def _run(name: str, cwd: Path, env: dict[str, str], figures: int) -> None:
    import nbformat
    from nbclient import NotebookClient

    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not c.get("outputs") for c in book.cells if c.cell_type == "code"), (
        f"{name} is committed with outputs; clear them"
    )
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits them
    try:
        NotebookClient(
            book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
        ).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    errors = [o for c in book.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = sum("image/png" in o.get("data", {}) for c in book.cells for o in c.get("outputs", []))
    assert images >= figures, f"{name} drew {images} figures, expected {figures}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("notebooks")


@pytest.mark.slow
def test_quickstart(world, workdir):
    env = {"MINECUBE_WORLD": str(world.path), "MINECUBE_EPOCHS": "1"}
    _run("01-quickstart.ipynb", workdir, env, figures=4)
    out = workdir / "quickstart-output"
    assert (out / "model" / "fpn-rgbn.safetensors").is_file()
    assert (out / "report" / "index.html").is_file()  # minecube.run, in one cell
    assert len(list((out / "runs").glob("*.json"))) == 1


@pytest.mark.slow
def test_training_lab(world, workdir):
    env = {"MINECUBE_WORLD": str(world.path), "MINECUBE_EPOCHS": "1"}
    _run("02-training-lab.ipynb", workdir, env, figures=1)
    assert (workdir / "lab-output" / "experiment" / "results.md").is_file()


@pytest.mark.slow
def test_scaling_out_on_object_storage(world, workdir, s3):
    model = workdir / "quickstart-output" / "model" / "fpn-rgbn"
    if not model.with_suffix(".json").is_file():
        test_quickstart(world, workdir)  # run alone: make the quick start's model first
    env = {
        "MINECUBE_WORLD": str(world.path),
        "MINECUBE_STORE": f"{s3}/notebook",
        "MINECUBE_MODEL": str(model),
    }
    _run("03-scaling-out.ipynb", workdir, env, figures=1)
    import s3fs

    written = s3fs.S3FileSystem().ls(f"{s3}/notebook/predictions.zarr")
    assert {Path(p).name for p in written} >= {"hunter-coal", "sudbury-nickel"}


def test_your_own_data(workdir):
    """Real files (tests/data/files) → items → cubes → labels → grouped split → a model with
    its baselines → areas, without a server."""
    from tests.conftest import FILES

    env = {"MINECUBE_DATA": str(FILES), "MINECUBE_EPOCHS": "2",
           "MINECUBE_OUT": str(workdir / "own-data-output")}  # fmt: skip
    _run("04-your-own-data.ipynb", workdir, env, figures=2)
    assert (workdir / "own-data-output" / "cubes.zarr").is_dir()
