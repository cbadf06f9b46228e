"""segment(): the chip grid, seam-freeness, nodata, schedulers, resumable Zarr writes, errors."""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import warnings

import numpy as np
import pytest
import rioxarray  # noqa: F401
import torch
import xarray as xr

from minecube.chips import Normalisation
from minecube.classes import DEFAULT_CLASSES
from minecube.models import CheckpointError, card_for, create, save
from minecube.segment import (
    _BLOCK_BYTES,
    IncompletePredictionError,
    SegmentError,
    _auto_block,
    _axis,
    _regions,
    _write_block,
    open_predictions,
    segment,
    segment_to_zarr,
)
from tests.conftest import refused

BANDS = ("red", "green", "blue", "nir")


def _model(seed: int = 0, architecture: str = "fpn", encoder_name: str | None = "resnet18"):
    torch.manual_seed(seed)
    model = create(architecture, encoder_name=encoder_name, in_channels=4).eval()
    norm = Normalisation(BANDS, (0.08, 0.07, 0.06, 0.25), (0.04, 0.03, 0.03, 0.1))
    model.card = card_for(model, bands=norm.bands, normalisation=norm, schema=DEFAULT_CLASSES)
    return model


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    return save(model, tmp_path_factory.mktemp("segment") / "fpn")


@pytest.fixture(scope="module")
def big_cube(lab):
    """A 1028 × 1032 px cube of two periods: a demo cube tiled 4 × 4, on a UTM grid."""
    cube = lab["cubes"]["hunter-coal"].isel(time=[0, 1])
    refl = cube.reflectance.transpose("time", "band", "y", "x").values
    tiled = np.tile(refl, (1, 1, 4, 4))
    ny, nx = tiled.shape[-2:]
    return xr.Dataset(
        {"reflectance": (("time", "band", "y", "x"), tiled)},
        coords={
            "time": cube.time.values,
            "band": cube.band.values,
            "y": 6_408_000 - 10 * np.arange(ny),
            "x": 309_800 + 10 * np.arange(nx),
        },
        attrs={"site_id": "tiled"},
    ).rio.write_crs(cube.rio.crs)


def test_chip_grid_owns_every_pixel_once():
    axis = _axis(1030, 288, 32, 512, multiple=32)
    assert (axis.size, axis.stride, axis.halo) == (288, 256, 16)
    assert axis.cuts == (0, 512, 1030)  # a sliver of 6 px joins the last block
    for blend in ("cosine", "none"):
        w = axis.window(blend)
        total = np.zeros(4 * axis.stride + axis.size)
        for k in range(5):
            total[k * axis.stride : k * axis.stride + axis.size] += w
        # inside the grid the neighbours' weights sum to one
        np.testing.assert_allclose(total[axis.size : 4 * axis.stride], 1.0, atol=1e-12)
    with pytest.raises(SegmentError, match="at most half the chip size"):
        _axis(500, 64, 48, None, multiple=32)


def test_the_default_block_is_about_a_batch_of_chips_within_the_memory_budget():
    """A block chosen for the user is whole chip strides: about ``batch_size`` chips (a
    square of them), else the most that keep its buffers — with the halo, one float32 per
    class and one for the weights (the accumulators) and one per band (the features) — within
    the budget; one chip at least, whatever its size."""

    def buffers(block: int, overlap: int, classes: int, bands: int) -> int:
        return (block + overlap) ** 2 * 4 * (classes + 1 + bands)

    assert [_auto_block(7, 4, 192, 64, b) for b in (1, 3, 4, 16, 24)] == [192, 192, 384, 768, 768]
    assert _auto_block(7, 4, 8192, 64, 16) == 8192  # one chip over the budget: still one
    for classes, bands, overlap in itertools.product((2, 7, 12), (1, 4, 13), (0, 32, 64)):
        for stride in range(16, 1024, 16):
            block = _auto_block(classes, bands, stride, overlap, 10**6)
            assert isinstance(block, int)
            assert block % stride == 0
            fits = buffers(block, overlap, classes, bands) <= _BLOCK_BYTES
            assert fits or block == stride, (classes, bands, overlap, stride)
            larger = buffers(block + stride, overlap, classes, bands)
            assert larger > _BLOCK_BYTES, (classes, bands, overlap, stride)


@pytest.mark.slow
def test_same_labels_for_any_chunking(big_cube, model):
    kwargs = {"input_dims": {"y": 288, "x": 288}, "overlap": 32}
    one = segment(big_cube, model, chunks=4096, **kwargs)
    tiles = segment(big_cube, model, chunks=512, **kwargs)
    assert one.data.numblocks[1:] == (1, 1)
    assert tiles.data.numblocks[1:] == (2, 2)
    np.testing.assert_array_equal(one.values, tiles.values)
    p_one = segment(big_cube, model, output="probabilities", chunks=4096, **kwargs).values
    p_tiles = segment(big_cube, model, output="probabilities", chunks=256, **kwargs).values
    np.testing.assert_array_equal(p_one, p_tiles)
    # probabilities are round(p · 254); they sum to 254 up to rounding
    sums = p_one.astype(int).sum(axis=1)
    assert np.abs(sums - 254).max() <= len(DEFAULT_CLASSES)


def test_no_blend_is_the_owning_chip(lab, model):
    """blend="none": each pixel takes the class of the chip that owns it, computed by hand."""
    cube = lab["cubes"]["sudbury-nickel"].isel(time=[0])
    size, overlap = 96, 32
    stride, h = size - overlap, overlap // 2
    labels = segment(cube, model, input_dims={"y": size, "x": size}, overlap=overlap, blend="none")
    x = cube.reflectance.sel(band=list(BANDS)).values[0]
    ok = np.isfinite(x).all(axis=0)
    x = model.card.normalisation.apply(np.where(ok, x, np.nan))
    ny, nx = ok.shape
    pad = np.zeros((4, ny + size + stride, nx + size + stride), np.float32)
    pad[:, h : h + ny, h : h + nx] = x
    expected = np.zeros((ny, nx), np.int64)
    with torch.inference_mode():
        for ky in range(-(-ny // stride)):
            for kx in range(-(-nx // stride)):
                y0, x0 = ky * stride, kx * stride  # chip origin in `pad` = k·s − h in the cube
                chip = torch.from_numpy(pad[None, :, y0 : y0 + size, x0 : x0 + size].copy())
                cls = model(chip).argmax(1)[0, h : h + stride, h : h + stride].numpy()
                expected[y0 : y0 + stride, x0 : x0 + stride] = cls[: ny - y0, : nx - x0]
    ids = np.asarray(DEFAULT_CLASSES.ids)[expected]
    got = labels.values[0]
    assert (got[~ok] == DEFAULT_CLASSES.nodata).all()
    assert (got[ok] == ids[ok]).mean() > 0.999  # fixed-point sums may break exact ties


def test_labels_are_a_labelled_dataarray_with_nodata(lab, model):
    cube = lab["cubes"]["pilbara-iron"].isel(time=[0, 1]).copy(deep=True)
    refl = cube.reflectance.values
    refl[1] = np.nan  # a period with no observation at all
    refl[0, 3, 10:30, 20:50] = np.nan  # a hole in one band (nir)
    cube["reflectance"] = cube.reflectance.copy(data=refl)
    labels = segment(cube, model, input_dims={"y": 128, "x": 128})
    assert labels.dims == ("time", "y", "x")
    assert labels.dtype == np.uint8
    assert labels.rio.crs == cube.rio.crs
    assert labels.rio.transform() == cube.rio.transform()
    assert labels.rio.nodata == DEFAULT_CLASSES.nodata
    assert labels.attrs["flag_meanings"].split() == DEFAULT_CLASSES.names
    values = labels.values
    assert (values[1] == 0).all()
    assert (values[0, 10:30, 20:50] == 0).all()
    observed = np.isfinite(refl[0]).all(axis=0)
    assert set(np.unique(values[0][observed])) <= set(DEFAULT_CLASSES.ids)
    probs = segment(cube, model, output="probabilities", input_dims={"y": 128, "x": 128})
    assert probs.dims == ("time", "class", "y", "x")
    assert list(probs["class"].values) == DEFAULT_CLASSES.names
    assert (probs.values[1] == 255).all()
    assert probs.rio.nodata == 255
    # the most probable class is the label
    p = probs.values[0]
    lut = np.asarray(DEFAULT_CLASSES.ids)
    agree = lut[p.argmax(axis=0)][observed] == values[0][observed]
    assert agree.mean() > 0.99  # uint8 rounding can tie near-equal classes


def test_tta_runs_the_eight_symmetries(lab, model):
    cube = lab["cubes"]["pilbara-iron"].isel(time=[0])
    plain = segment(cube, model, input_dims={"y": 96, "x": 96}, output="probabilities")
    d4 = segment(cube, model, input_dims={"y": 96, "x": 96}, output="probabilities", tta="d4")
    assert d4.shape == plain.shape
    assert not np.array_equal(d4.values, plain.values)  # a random net is not symmetric


def test_tta_is_the_mean_over_the_eight_views_and_commutes_with_them(model):
    """Against an explicit loop over the dihedral group written here (the 4 rotations, each
    also mirrored, every prediction mapped back), and the group's defining property: averaged
    over all eight views, rotating or mirroring the input rotates or mirrors the output — which
    a random network alone does not do."""
    from minecube.segment import _d4_forward

    torch.manual_seed(3)
    x = torch.randn(1, 4, 64, 64)
    views = []
    with torch.inference_mode():
        for mirror in (False, True):
            for turns in range(4):
                v = torch.rot90(x.flip(-1) if mirror else x, turns, dims=(2, 3))
                p = torch.rot90(model(v).softmax(1), -turns, dims=(2, 3))
                views.append(p.flip(-1) if mirror else p)
        expected = torch.stack(views).mean(0)
        d4 = _d4_forward(model, x, "d4")
        torch.testing.assert_close(d4, expected, rtol=1e-5, atol=1e-6)
        turned = _d4_forward(model, torch.rot90(x, 1, dims=(2, 3)), "d4")
        torch.testing.assert_close(turned, torch.rot90(d4, 1, dims=(2, 3)), rtol=1e-4, atol=1e-5)
        mirrored = _d4_forward(model, x.flip(-2), "d4")
        torch.testing.assert_close(mirrored, d4.flip(-2), rtol=1e-4, atol=1e-5)
        plain = model(torch.rot90(x, 1, dims=(2, 3))).softmax(1)
        assert not torch.allclose(plain, torch.rot90(model(x).softmax(1), 1, dims=(2, 3)))


def test_accessor_is_the_same_function(lab, model):
    cube = lab["cubes"]["kalimantan-coal"].isel(time=[0])
    kwargs = {"input_dims": {"y": 96, "x": 96}}
    direct = segment(cube, model, **kwargs).values
    np.testing.assert_array_equal(cube.minecube.segment(model, **kwargs).values, direct)
    np.testing.assert_array_equal(cube.reflectance.minecube.segment(model, **kwargs).values, direct)


def test_threaded_and_local_cluster_agree(lab, checkpoint, model, cluster):
    from distributed import Client

    cube = lab["cubes"]["bodaibo-gold"]
    kwargs = {"input_dims": {"y": 96, "x": 96}, "chunks": 128}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: CPU kernels split sums by thread count
    try:
        local = segment(cube, checkpoint, **kwargs).compute(scheduler="threads")
    finally:
        torch.set_num_threads(threads)
    lazy = segment(cube, checkpoint, **kwargs)
    # tasks carry the checkpoint path, not the weights
    assert len(json.dumps(lazy.attrs["model"])) < 300
    with Client(cluster, set_as_default=False) as client:
        client.run(lambda: __import__("minecube.segment").segment._cached.cache_clear())
        remote = lazy.compute(scheduler=client)
        loads = client.run(lambda: __import__("minecube.segment").segment._cached.cache_info())
        trims = client.run(lambda: __import__("os").environ.get("MALLOC_TRIM_THRESHOLD_"))
    np.testing.assert_array_equal(local.values, remote.values)
    assert lazy.data.npartitions > len(loads)  # more tasks than workers …
    assert all(info.misses <= 1 for info in loads.values())  # … but one load per worker
    assert sum(info.hits for info in loads.values()) > 0
    assert set(trims.values()) == {"65536"}  # the setting segment() works around is there


def test_a_loaded_model_is_one_graph_key(lab, model):
    cube = lab["cubes"]["kalimantan-coal"].isel(time=[0, 1])
    lazy = segment(cube, model, input_dims={"y": 96, "x": 96}, chunks=128)
    keys = [k for k in dict(lazy.data.__dask_graph__()) if "minecube-model" in str(k)]
    assert len(keys) == 1


def test_segment_to_zarr_resumes_without_redoing_regions(lab, checkpoint, tmp_path):
    cube = lab["cubes"]["atacama-copper"]
    store = tmp_path / "predictions.zarr"
    kwargs = {"input_dims": {"y": 96, "x": 96}, "chunks": 128, "progress": False}
    with pytest.raises(RuntimeError, match="fail_after"):
        segment_to_zarr(cube, checkpoint, store, fail_after=2, **kwargs)
    with pytest.raises(IncompletePredictionError, match="run the same segment_to_zarr"):
        open_predictions(store, "atacama-copper")
    import zarr

    from minecube.store import read_manifest

    node = zarr.open_group(store, mode="r")["atacama-copper"]
    done = list(read_manifest(store, "atacama-copper")["units"])
    regions = dict(_all_regions(cube, checkpoint, kwargs))
    assert 2 <= len(done) < len(regions)
    chunk = node["prediction"].chunks
    first = {}  # the chunk files of the regions marked complete, with their times
    for name in done:
        ranges = [
            range(r.start // c, -(-r.stop // c))
            for r, c in zip(regions[name].values(), chunk, strict=True)
        ]
        for index in itertools.product(*ranges):
            path = store / "atacama-copper" / "prediction" / "c" / "/".join(map(str, index))
            first[path] = path.stat().st_mtime_ns
    stored = segment_to_zarr(cube, checkpoint, store, **kwargs)
    # regions marked complete before the crash were not written again
    for path, stamp in first.items():
        assert path.stat().st_mtime_ns == stamp
    expected = segment(cube, checkpoint, input_dims={"y": 96, "x": 96}, chunks=128)
    np.testing.assert_array_equal(stored.values, expected.values)
    assert stored.rio.crs == cube.rio.crs
    assert stored.rio.nodata == 0
    # .rio works on what open_predictions returns in an interpreter that never imported rioxarray
    import subprocess
    import sys

    code = (
        "from minecube.segment import open_predictions; "
        f"p = open_predictions({str(store)!r}, 'atacama-copper'); print(p.rio.crs.to_epsg())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(cube.rio.crs.to_epsg())
    # another model or setting is not silently mixed into the same group
    with pytest.raises(SegmentError, match="other"):
        segment_to_zarr(cube, checkpoint, store, **{**kwargs, "overlap": 16, "chunks": 160})


def _all_regions(cube, checkpoint, kwargs):
    from minecube.segment import _regions

    settings = {k: v for k, v in kwargs.items() if k != "progress"}
    return _regions(segment(cube, checkpoint, **settings))


def test_plain_xarray_reads_stored_labels_and_cubes(lab, checkpoint, tmp_path):
    """xr.open_zarr alone, as a Pangeo user opens a store: uint8 classes with CF flags (the
    no-label value the first, ``no_data``), ``spatial_ref`` a coordinate, rioxarray and
    odc.geo place them; minecube's reader gives the same classes. Cubes likewise."""
    import odc.geo.xr  # noqa: F401 - registers .odc

    from minecube.classes import ClassSchema

    site = "sudbury-nickel"
    cube = lab["cubes"][site].isel(time=[0, 1]).copy(deep=True)
    refl = cube.reflectance.values.copy()
    refl[0, :, :20, :30] = np.nan  # unobserved: no_data
    cube["reflectance"] = cube.reflectance.copy(data=refl)
    store = tmp_path / "predictions.zarr"
    segment_to_zarr(cube, checkpoint, store, input_dims={"y": 96, "x": 96}, progress=False)
    plain = xr.open_zarr(store, group=site, consolidated=False)
    labels = plain.prediction
    assert labels.dtype == np.uint8
    assert "spatial_ref" in plain.coords
    assert "spatial_ref" not in plain.data_vars
    assert labels.attrs["flag_values"] == [0, *DEFAULT_CLASSES.ids]
    assert labels.attrs["flag_meanings"].split() == ["no_data", *DEFAULT_CLASSES.names]
    assert ClassSchema.from_cf_attrs(labels.attrs) == DEFAULT_CLASSES
    assert (labels.values[0, :20, :30] == 0).all()
    assert (labels.values[1] > 0).all()
    assert labels.rio.crs == cube.rio.crs
    assert labels.rio.nodata == 0
    assert labels.rio.transform() == cube.rio.transform()
    assert labels.odc.geobox.crs.epsg == cube.rio.crs.to_epsg()
    ours = open_predictions(store, site)
    np.testing.assert_array_equal(ours.values, labels.values)
    assert ours.rio.nodata == 0
    assert ours.attrs["flag_meanings"].split() == DEFAULT_CLASSES.names
    cubes = xr.open_zarr(lab["store"], group=site, consolidated=False)
    assert "spatial_ref" in cubes.coords
    assert cubes.reflectance.dtype == np.float32
    assert cubes.reflectance.rio.crs == lab["cubes"][site].rio.crs
    assert cubes.reflectance.odc.geobox.crs.epsg == lab["cubes"][site].rio.crs.to_epsg()


def test_a_schemas_own_no_label_value_is_stored_and_read_back(lab, tmp_path):
    """A user's schema with no-label 254, not the default 0: stored as the first CF flag and
    as ``nodata``, read back so by plain xarray and by open_predictions."""
    import dataclasses

    site = "sudbury-nickel"
    cube = lab["cubes"][site].isel(time=[0]).copy(deep=True)
    refl = cube.reflectance.values.copy()
    refl[0, :20, :30] = np.nan  # unobserved: no label
    cube["reflectance"] = cube.reflectance.copy(data=refl)
    model = _model()
    schema = dataclasses.replace(DEFAULT_CLASSES, nodata=254)
    model.card = card_for(model, bands=BANDS, normalisation=model.card.normalisation,
                          schema=schema)  # fmt: skip
    store = tmp_path / "predictions.zarr"
    segment_to_zarr(cube, model, store, input_dims={"y": 96, "x": 96}, progress=False)
    labels = xr.open_zarr(store, group=site, consolidated=False).prediction
    assert labels.attrs["flag_values"] == [254, *DEFAULT_CLASSES.ids]
    assert labels.rio.nodata == 254
    assert (labels.values[0, :20, :30] == 254).all()
    ours = open_predictions(store, site)
    assert ours.rio.nodata == 254
    np.testing.assert_array_equal(ours.values, labels.values)


def test_a_store_written_otherwise_is_refused_naming_what_differs(lab, tmp_path):
    """A group is resumed only by the same model (its file name, creation, architecture and
    bands) with the same settings on the same periods and grid; anything else is refused,
    naming what differs, and the stored predictions are kept."""

    whole = lab["cubes"]["sudbury-nickel"]
    cube = whole.isel(time=[0], y=slice(0, 96), x=slice(0, 96))
    store = tmp_path / "predictions.zarr"

    def saved(folder: str, created: str, architecture: str = "fpn", bands=BANDS):
        model = create(architecture, encoder_name="resnet18", in_channels=len(bands)).eval()
        norm = Normalisation(bands, (0.08,) * len(bands), (0.04,) * len(bands))
        model.card = card_for(model, bands=bands, normalisation=norm, schema=DEFAULT_CLASSES,
                              created=created)  # fmt: skip
        return save(model, tmp_path / folder / "model")

    first = saved("a", "2026-01-01T00:00:00+00:00")
    kept = segment_to_zarr(cube, first, store, progress=False).load()
    others = {
        "['model_created']": (saved("b", "2026-02-01T00:00:00+00:00"), {}),
        "['segment']": (first, {"blend": "none"}),
        "['bands', 'model_created', 'model_spec']": (
            saved("c", "2026-03-01T00:00:00+00:00", "unet", ("red", "green", "blue")), {}),
        "['time']": (first, {"cube": whole.isel(time=[1], y=slice(0, 96), x=slice(0, 96))}),
        "['origin']": (first, {"cube": whole.isel(time=[0], y=slice(16, 112), x=slice(0, 96))}),
        "['chunks', 'shape']": (first, {"cube": cube.isel(y=slice(0, 80))}),
        "['chunks', 'name', 'shape']": (first, {"output": "probabilities"}),
        "['crs']": (first, {"cube": cube.rio.write_crs("EPSG:32618")}),
    }  # fmt: skip
    for differ, (model, settings) in others.items():
        settings = {"cube": cube} | settings
        message = refused(SegmentError, lambda m=model, s=settings: segment_to_zarr(
            s.pop("cube"), m, store, progress=False, **s))  # fmt: skip
        assert message == (
            f"group 'sudbury-nickel' of {str(store)!r} holds predictions made with other "
            f"{differ}; write to another group or pass overwrite=True to start again"
        )
    xr.testing.assert_identical(open_predictions(store, "sudbury-nickel").load(), kept)


def test_a_period_with_no_observation_is_stored_whole_as_no_label(lab, checkpoint, tmp_path):
    """Regions that are no label throughout (a period of clouds) are chunks equal to the fill
    value, which zarr skips writing unless told: they are written, so the group is whole and
    reads back as no label (labels: 0, probabilities: 255), not a FileNotFoundError."""
    from minecube.store import check

    cube = lab["cubes"]["sudbury-nickel"].isel(time=[1]).copy(deep=True)
    cube["reflectance"] = cube.reflectance.where(False)  # nothing observed
    for output, nodata in (("labels", 0), ("probabilities", 255)):
        store = tmp_path / f"{output}.zarr"
        stored = segment_to_zarr(cube, checkpoint, store, input_dims={"y": 96, "x": 96},
                                 output=output, progress=False)  # fmt: skip
        assert (stored.values == nodata).all()
        assert check(store).ok, str(check(store))
        written = (store / "sudbury-nickel" / str(stored.name) / "c").rglob("*")
        assert len([f for f in written if f.is_file()]) == len(_regions(stored))


def test_a_region_is_written_once_when_its_task_runs_twice(tmp_path):
    """A region's write leaves a mark after its data, named by the block's index as
    segment_to_zarr looks it up to redo a damaged region; a second run of the task (its worker
    lost before the scheduler heard it finished) finds it and writes nothing."""
    import zarr

    store = str(tmp_path / "predictions.zarr")
    zarr.create_array(store, name="site/prediction", shape=(1, 4, 4), chunks=(1, 2, 2),
                      dtype="u1", fill_value=0)  # fmt: skip
    marks = tmp_path / "marks"
    marks.mkdir()
    where = {"store": store, "path": "site/prediction", "marks": str(marks),
             "bounds": [[0, 1], [0, 2, 4], [0, 2, 4]], "block_id": (0, 1, 0)}  # fmt: skip
    done = _write_block(np.full((1, 2, 2), 7, np.uint8), **where)
    np.testing.assert_array_equal(done, np.ones((1, 1, 1), bool))
    assert [m.name for m in marks.iterdir()] == ["0.1.0"]
    expected = np.zeros((1, 4, 4), np.uint8)
    expected[0, 2:, :2] = 7
    np.testing.assert_array_equal(zarr.open_array(store, path="site/prediction")[:], expected)
    assert done.dtype == bool  # as segment_to_zarr's map_blocks declares
    again = _write_block(np.full((1, 2, 2), 9, np.uint8), **where)
    np.testing.assert_array_equal(again, np.ones((1, 1, 1), bool))
    assert again.dtype == bool
    np.testing.assert_array_equal(zarr.open_array(store, path="site/prediction")[:], expected)


def test_bad_input_is_refused_clearly(lab, model, checkpoint, tmp_path):
    cube = lab["cubes"]["cape-york-bauxite"].isel(time=[0])
    with pytest.raises(
        CheckpointError, match=r"lacks \['nir'\].*it has \['blue', 'green', 'red'\]"
    ):
        segment(cube.sel(band=["blue", "green", "red"]), model)
    no_crs = cube.drop_vars("spatial_ref")
    no_crs["reflectance"].attrs.pop("grid_mapping", None)
    no_crs["reflectance"].encoding.pop("grid_mapping", None)
    with pytest.raises(SegmentError, match="no CRS"):
        segment(no_crs, model)
    wrong = _model()
    wrong.card = card_for(
        wrong,
        bands=model.card.bands,
        normalisation=model.card.normalisation,
        schema=DEFAULT_CLASSES.__class__(DEFAULT_CLASSES.classes[:2]),
    )
    with pytest.raises(CheckpointError, match="predicts 10 classes but its card's schema has 2"):
        segment(cube, wrong)
    broken = tmp_path / "broken"
    save(model, broken)
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        segment(cube, broken)
    with pytest.raises(CheckpointError, match="missing"):
        segment(cube, tmp_path / "nothing-here")
    with pytest.raises(SegmentError, match="blend"):
        segment(cube, model, blend="gaussian")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        odd = segment(cube, model, input_dims={"y": 96, "x": 96}, chunks=100)
    assert any("not a multiple of the chip stride 64" in str(w.message) for w in caught)
    assert odd.data.chunks[1][0] == 64


_KILL_AFTER_TWO_REGIONS = """
import json, os, sys
real = os.replace
def replace(source, target, *args, **kwargs):  # the manifest lands with one os.replace
    real(source, target, *args, **kwargs)
    if str(target).endswith(".minecube/groups/hunter-coal.json"):
        with open(target) as f:
            if len(json.load(f)["units"]) >= 2:
                os._exit(137)  # as kill -9, right after two regions are recorded
os.replace = replace
from minecube import segment
from minecube.cube import open_cube
segment._RECORD_EVERY = 0  # the manifest after every region
store, checkpoint, out = sys.argv[1:4]
segment.segment_to_zarr(open_cube(store, "hunter-coal"), checkpoint, out, progress=False,
                        input_dims={"y": 96, "x": 96}, chunks=64)
"""


def test_a_killed_write_resumes(lab, checkpoint, tmp_path):
    """Kill a process (as SIGKILL does) part-way through segment_to_zarr, right after its
    manifest records two regions; the next call finishes the job."""
    import subprocess
    import sys
    from pathlib import Path

    store = tmp_path / "killed.zarr"
    settings = {"input_dims": {"y": 96, "x": 96}, "chunks": 64}
    args = [str(lab["store"]), str(checkpoint), str(store)]
    child = subprocess.run(
        [sys.executable, "-c", _KILL_AFTER_TWO_REGIONS, *args], cwd=Path(__file__).parent.parent
    )
    assert child.returncode == 137, "the write ended before it could be killed"
    with pytest.raises(IncompletePredictionError, match="2 regions written"):
        open_predictions(store, "hunter-coal")
    cube = open_cube_from(lab, "hunter-coal")
    stored = segment_to_zarr(cube, checkpoint, store, progress=False, **settings)
    np.testing.assert_array_equal(stored.values, segment(cube, checkpoint, **settings).values)


def open_cube_from(lab, site):
    from minecube.cube import open_cube

    return open_cube(lab["store"], site)


_ALLOCATOR = """
import ctypes, json, os
from minecube.segment import _relax_malloc_trim

class Mallinfo2(ctypes.Structure):  # glibc's: the main arena's size, blocks served by mmap
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
MIB = 2**20

def mapped(size):  # whether the allocator serves a block of `size` by mmap
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    after = libc.mallinfo2().hblks
    libc.free(block)
    return after > before

def returned(size):  # of `size` allocated on the heap in 30 MiB blocks and freed, MiB given back
    blocks = [libc.malloc(30 * MIB) for _ in range(size // (30 * MIB))]
    peak = libc.mallinfo2().arena
    for block in reversed(blocks):
        libc.free(block)
    return (peak - libc.mallinfo2().arena) / MIB

seen = {}
for value in (None, "65536x", str(2**26), "65536"):  # distributed's setting comes last
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    if value is not None:
        os.environ["MALLOC_TRIM_THRESHOLD_"] = value
    _relax_malloc_trim()
    seen[str(value)] = [mapped(s * MIB) for s in (8, 31, 33)]
seen["returned"] = [returned(90 * MIB), returned(180 * MIB)]
print(json.dumps(seen))
"""


def test_a_worker_undoes_distributeds_tiny_malloc_trim_threshold():
    """distributed starts workers with MALLOC_TRIM_THRESHOLD_=65536, which pins glibc's mmap
    threshold at 128 KiB (every tensor mmapped and faulted afresh: field notes). The worker's
    setup raises it to 32 MiB and the trim threshold to 128 MiB, and leaves other settings
    alone — read back from the allocator of a fresh process started as a worker is: which
    blocks it mmaps, and how much of a freed heap it returns."""
    import subprocess
    import sys
    from pathlib import Path

    try:
        ctypes.CDLL("libc.so.6").mallinfo2  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("needs glibc ≥ 2.33: the function does nothing elsewhere")
    child = subprocess.run([sys.executable, "-c", _ALLOCATOR], capture_output=True, text=True,
                           cwd=Path(__file__).parent.parent,
                           env=os.environ | {"MALLOC_TRIM_THRESHOLD_": "65536"})  # fmt: skip
    assert child.returncode == 0, child.stderr
    seen = json.loads(child.stdout)
    for value in ("None", "65536x", str(2**26)):  # not distributed's tiny setting: left alone
        assert seen[value] == [True, True, True], value
    assert seen["65536"] == [False, False, True]  # blocks up to 32 MiB from the heap
    kept, given_back = seen["returned"]
    assert kept < 1  # a freed heap top under 128 MiB is kept...
    assert given_back >= 150  # ...one over it returned
