"""A tiny experiment grid, end to end: YAML → training runs → results table; resumes."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from minecube.classes import DEFAULT_CLASSES
from minecube.cli import main
from minecube.experiment import ExperimentError, read_grid, run


@pytest.fixture(scope="module")
def grid_file(world, cube_store, tmp_path_factory):
    folder = tmp_path_factory.mktemp("grid")
    grid = {
        "cubes": str(cube_store),
        "sites": str(world.path / "sites.geojson"),
        "labels": str(world.path / "labels" / "{site_id}.gpkg"),
        "split": {"train": ["kalimantan-coal"], "val": ["bodaibo-gold"], "test": ["hunter-coal"]},
        "models": [
            {"architecture": "segformer"},
            # the transfer-learning pair: the same network from scratch and from csmask-l2a
            {
                "architecture": "unet",
                "encoder_name": "efficientnet-b4",
                "bands": "rgbn",
                "encoder_weights": [None, "csmask-l2a"],
            },
        ],
        "bands": ["rgb", "rgbn+ndvi"],
        "chips": {"input_dims": {"y": 64, "x": 64}},
        "train": {"epochs": 1, "batch_size": 16},
        "out": str(folder / "out"),
    }
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


@pytest.mark.slow
def test_grid_writes_its_results_and_resumes(grid_file):
    import dataclasses

    # a first sitting out of time before any run: the tables hold the baseline, and say so
    first = dataclasses.replace(read_grid(grid_file), out=str(grid_file.parent / "first"))
    empty = run(first, progress=False, budget_s=0)
    assert list(empty.run) == ["baseline", "baseline-background"]
    assert "**4 of 4 runs are not done yet**" in (grid_file.parent / "first/results.md").read_text()
    results = run(grid_file, progress=False)
    out = grid_file.parent / "out"
    assert list(results.run) == [
        "segformer-default-rgb-scratch",
        "segformer-default-rgbn_ndvi-scratch",
        "unet-efficientnet-b4-rgbn-scratch",
        "unet-efficientnet-b4-rgbn-csmask-l2a",
        "baseline",
        "baseline-background",
    ]
    assert results.encoder_name.tolist()[:4] == ["mit_b0", "mit_b0", *["efficientnet-b4"] * 2]
    assert results.weights.tolist()[2:4] == ["scratch", "csmask-l2a"]
    assert results.pretrained_tensors.tolist()[2:4] == [None, "603/603"]
    # the majority-class baseline: its class is right wherever it is right, nothing else is
    baseline = results.iloc[-2]
    majority = baseline.architecture.removeprefix("majority class: ")
    iou = baseline.filter(like="iou_").astype(float)
    assert iou[f"iou_{majority}"] == pytest.approx(baseline.test_overall_accuracy)
    assert (iou.drop(f"iou_{majority}").fillna(0) == 0).all()
    assert baseline.test_miou == pytest.approx(baseline.test_overall_accuracy / iou.notna().sum())
    # all background: the commonest land class, never a mining class
    background = results.iloc[-1].architecture.removeprefix("background class: ")
    assert not DEFAULT_CLASSES[background].is_mining
    assert {"majority_miou", "background_miou", "miou_low", "miou_high"} <= set(
        pd.read_csv(out / "groups.csv").columns
    )
    assert results.test_miou.between(0, 1).all()
    assert {f"iou_{c}" for c in ("open_pit", "water")} <= set(results.columns)
    assert pd.read_csv(out / "results.csv").shape == results.shape
    groups = pd.read_csv(out / "groups.csv")
    assert {"all", "site_id", "climate", "commodity"} == set(groups.level)
    markdown = (out / "results.md").read_text()
    assert "| segformer-default-rgb-scratch |" in markdown
    assert "Test IoU per class" in markdown
    assert "| baseline | majority class: " in markdown
    assert "| unet-efficientnet-b4-rgbn-csmask-l2a | unet | efficientnet-b4 |" in markdown
    for name in results.run[:4]:
        assert (out / "models" / f"{name}.safetensors").is_file()
        assert (out / "models" / f"{name}.json").is_file()
    # a second call finds every run finished and trains nothing
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    again = run(grid_file, progress=False)
    pd.testing.assert_frame_equal(again, results)
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    # a run interrupted before its record was written is redone, and only that one
    lost = out / "runs" / f"{results.run[1]}.json"
    lost.unlink()
    partial = run(grid_file, progress=False, budget_s=0)  # out of time before any run
    assert not lost.exists()
    assert results.run[1] not in set(partial.run)
    assert "**1 of 4 runs are not done yet**" in (out / "results.md").read_text()
    run(grid_file, progress=False)
    assert lost.exists()
    kept = out / "runs" / f"{results.run[0]}.json"
    assert kept.stat().st_mtime_ns == stamps[kept]


def test_cli_runs_the_grid(grid_file):
    result = CliRunner().invoke(main, ["experiment", str(grid_file)])
    assert result.exit_code == 0, result.output
    assert "segformer-default-rgbn_ndvi-scratch" in result.output
    assert "results.md" in result.output


def test_bad_grids_fail_before_training(grid_file, tmp_path):
    grid = yaml.safe_load(grid_file.read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**grid, "epochs": 3}))
    with pytest.raises(ExperimentError, match=r"unknown keys \['epochs'\]"):
        read_grid(bad)
    bad.write_text(
        yaml.safe_dump({**grid, "split": {"train": ["atlantis"], "test": ["hunter-coal"]}})
    )
    with pytest.raises(ExperimentError, match=r"split names sites \['atlantis'\]"):
        run(bad, progress=False)
    bad.write_text(
        yaml.safe_dump({**grid, "models": [{"architecture": "fpn", "encoder_name": "resnet18",
                                            "encoder_weights": "csmask-l2a"}]})
    )  # fmt: skip
    with pytest.raises(ValueError, match="encoder_name='efficientnet-b4'"):
        run(bad, progress=False)
    bad.write_text(yaml.safe_dump({**grid, "bands": ["rgbnir"], "out": str(tmp_path / "o")}))
    with pytest.raises(ValueError, match="unknown band preset 'rgbnir'"):
        run(bad, progress=False)
    assert not (tmp_path / "o").exists()
    bad.write_text(yaml.safe_dump({**grid, "encoder_weights": ["imagenet"],
                                   "out": str(tmp_path / "o")}))  # fmt: skip
    result = CliRunner().invoke(main, ["experiment", str(bad)])
    assert result.exit_code != 0
    assert "not in the local Hugging Face cache" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("demo-grid", "minecube experiment docs/examples/demo-grid.yaml"),
        ("transfer-grid", "minecube experiment docs/examples/transfer-grid.yaml"),
        ("transfer-grid-16", "minecube experiment docs/examples/transfer-grid-16.yaml"),
        ("paper-grid", "bash benchmarks/paper_grid.sh MINUTES"),
    ],
)
def test_the_documented_grids_are_valid_and_say_how_to_run_them(name, command):
    """The grids whose results docs/training.md quotes are committed and read as they are."""
    from pathlib import Path

    path = Path(__file__).parents[1] / "docs" / "examples" / f"{name}.yaml"
    grid = read_grid(path)
    assert command in path.read_text()
    assert grid.models
    assert grid.bands
