"""STAC out: the items that describe minecube's stores and models, and static catalogues.

Every group a store holds (a site's cube or predictions) is described by a STAC Item written
into the store with the data, ``<store>/.minecube/stac/items/<group>.json``, and the store as a
whole by a Collection beside them, ``<store>/.minecube/stac/collection.json`` (a copy of the
store keeps both). An item carries

- the **projection** extension (``proj:code``, ``proj:shape``, ``proj:transform``, ``proj:bbox``)
  of the group's grid;
- the **datacube** extension: ``cube:dimensions`` (x, y, time and, for cubes, band) and
  ``cube:variables`` (reflectance, ndvi, valid_count; or the prediction) with units and types;
- the **classification** extension for predictions: every class's value, name, description and
  colour, and the nodata value;
- the **processing** extension (``processing:software``, ``processing:lineage``) and
  ``derived_from`` links to the frozen source items (cubes) or the model's MLM item
  (predictions);
- one Zarr asset, ``data``, with ``xarray:open_kwargs`` (the **xarray-assets** extension), so
  that ``xr.open_dataset(item.assets["data"])`` opens the group through ``xpystac``.

Models are described by STAC Items of the **Machine Learning Model** (MLM) extension, written
by :func:`minecube.models.save` beside the weights (:func:`model_item`);
:func:`minecube.models.load` reads them. :func:`publish` gathers stores and models into a
static catalogue for a STAC browser.

The extension versions are those whose JSON schemas the tests validate against offline
(``tests/data/stac-schemas/``): classification v1.1.0 is the one MLM v1.4.0 refers to.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from minecube import __version__
from minecube.classes import ClassSchema
from minecube.errors import MinecubeError

__all__ = ["CatalogError", "model_item", "publish", "read_item", "store_collection"]

EXTENSIONS = {
    "projection": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "datacube": "https://stac-extensions.github.io/datacube/v2.3.0/schema.json",
    "classification": "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
    "processing": "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
    "xarray": "https://stac-extensions.github.io/xarray-assets/v1.0.0/schema.json",
    "file": "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "mlm": "https://stac-extensions.github.io/mlm/v1.4.0/schema.json",
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
}
"""The STAC extensions minecube writes, by name: their schema URIs."""
ZARR = "application/vnd+zarr"
"""The media type of a Zarr asset (the one ``xpystac`` opens with xarray's Zarr engine)."""
_STAC = "stac"
_UP = "../../"
"""From an item inside a store (``.minecube/stac/items/``) up to ``.minecube/``."""
_CUBE_VARIABLES = {
    "reflectance": ("surface reflectance, the period's median of the clear observations", "1"),
    "ndvi": ("normalised difference vegetation index of the period's median reflectance", "1"),
    "valid_count": ("clear observations in the period", "count"),
}


class CatalogError(MinecubeError, ValueError):
    """A store group, model or STAC file that cannot be described or read as STAC."""


def _stac_path(store: str | os.PathLike, *parts: str) -> str:
    from minecube import store as stores

    return stores._inside(store, _STAC, *parts)


def _store_href(store: str | os.PathLike) -> str:
    """The store as an asset href: its absolute path, or its URL."""
    from minecube import store as stores

    return os.fspath(store) if stores._is_url(store) else str(Path(store).absolute())


def _collection_id(store: str | os.PathLike) -> str:
    name = os.fspath(store).rstrip("/").rsplit("/", 1)[-1]
    return name.removesuffix(".zarr") or "store"


def _iso(t) -> str:
    return np.datetime_as_string(np.datetime64(t, "s"), unit="s") + "Z"


def _grid(ds) -> dict[str, Any]:
    """The projection fields and the lon/lat bbox of a group's grid."""
    from pyproj import Transformer

    crs = ds.rio.crs
    h, w = ds.sizes["y"], ds.sizes["x"]
    if crs is None:  # a grid placed nowhere: no footprint to give (STAC allows none)
        return {"epsg": None, "bbox": None, "proj": {"proj:code": None, "proj:shape": [h, w]}}
    transform = ds.rio.transform()
    left, bottom, right, top = ds.rio.bounds()
    lon_lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    bbox = list(lon_lat.transform_bounds(left, bottom, right, top, densify_pts=21))
    epsg = crs.to_epsg()
    return {
        "epsg": epsg,
        "bbox": [round(v, 7) for v in bbox],
        "proj": {
            "proj:code": f"EPSG:{epsg}" if epsg else None,
            **({} if epsg else {"proj:wkt2": crs.to_wkt()}),
            "proj:shape": [h, w],
            "proj:transform": list(transform)[:6],
            "proj:bbox": [left, bottom, right, top],
        },
    }


def _dimensions(ds, epsg: int | None) -> dict[str, Any]:
    """``cube:dimensions`` of a group: its x, y, time (and band) axes."""
    dims: dict[str, Any] = {}
    for axis in ("x", "y"):
        values = ds[axis].values
        step = float(values[1] - values[0]) if len(values) > 1 else None
        dims[axis] = {
            "type": "spatial", "axis": axis,
            "extent": [float(values.min()), float(values.max())],
            **({"step": step} if step is not None else {}),
        }  # fmt: skip
        if ds.rio.crs is not None:
            dims[axis]["reference_system"] = epsg or ds.rio.crs.to_wkt()
    times = [_iso(t) for t in ds.time.values]
    dims["time"] = {"type": "temporal", "extent": [times[0], times[-1]], "values": times}
    if "band" in ds.dims:
        dims["band"] = {"type": "bands", "values": [str(b) for b in ds.band.values]}
    return dims


def _classes(schema: ClassSchema) -> list[dict[str, Any]]:
    """The classification extension's classes of a schema, its nodata value first."""
    return [
        {"value": int(schema.nodata), "name": "no_data", "nodata": True,
         "description": "no valid observation: cloud, shadow or outside the scene"},
        *({"value": int(c.id), "name": c.name, "description": c.description or c.name,
           **_hint(c.colour)} for c in schema),
    ]  # fmt: skip


def _hint(colour: str) -> dict[str, str]:
    """A class colour as the extension's ``color_hint`` (six hex digits), if it is one."""
    hex6 = colour.lstrip("#")
    return {"color_hint": hex6.upper()} if re.fullmatch(r"[0-9A-Fa-f]{6}", hex6) else {}


def _variables(ds, kind: str) -> tuple[dict[str, Any], ClassSchema | None]:
    """``cube:variables`` of a group, and its class schema (predictions)."""
    out: dict[str, Any] = {}
    schema = None
    for name, var in ds.data_vars.items():
        entry = {"dimensions": list(var.dims), "type": "data", "data_type": str(var.dtype)}
        if kind == "cubes":
            description, unit = _CUBE_VARIABLES.get(str(name), (str(name), None))
            entry |= {"description": description, **({"unit": unit} if unit else {})}
        else:
            try:
                schema = ClassSchema.from_cf_attrs(var.attrs)
            except ValueError:
                schema = None
            entry["description"] = "class of each pixel (classification:classes)"
            if schema is not None:
                entry["nodata"] = int(schema.nodata)
        out[str(name)] = entry
    return out, schema


def _open(store, group: str, kind: str):
    """The group as written: a cube's whole periods (:func:`minecube.cube.open_cube`), or the
    predictions' Zarr arrays opened by plain xarray (their flags kept)."""
    import xarray as xr

    if kind == "cubes":
        from minecube.cube import open_cube

        return open_cube(store, group)
    kw = {"group": group, "decode_coords": "all", "consolidated": False}
    return xr.open_zarr(store, mask_and_scale=False, **kw)


def group_item(store: str | os.PathLike, group: str, *, model: str | None = None):
    """The STAC Item of one group of a minecube store (see the module's description).

    ``model`` is the href of the MLM item of the model that made a group of predictions.
    """
    import pystac

    from minecube import store as stores

    manifest = stores.read_manifest(store, group)
    if manifest is None:
        raise CatalogError(f"group {group!r} of {os.fspath(store)!r} has no minecube manifest")
    kind = "cubes" if manifest.get("kind") == "cube" else "predictions"
    ds = _open(store, group, kind)
    if ds.sizes.get("time", 0) == 0:
        raise CatalogError(f"group {group!r} of {os.fspath(store)!r} holds no whole period yet")
    grid = _grid(ds)
    variables, schema = _variables(ds, kind)
    geometry = None
    if grid["bbox"] is not None:
        west, south, east, north = grid["bbox"]
        ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
        geometry = {"type": "Polygon", "coordinates": [ring]}
    times = ds.time.values
    extensions = ["projection", "datacube", "processing", "xarray"]
    properties = {
        "start_datetime": _iso(times[0]), "end_datetime": _iso(times[-1]),
        **{k: v for k, v in grid["proj"].items() if v is not None},
        "cube:dimensions": _dimensions(ds, grid["epsg"]), "cube:variables": variables,
        "processing:software": {"minecube": ds.attrs.get("minecube_version", __version__)},
        "processing:lineage": (
            "cloud-masked, composited surface reflectance built from the linked source items"
            if kind == "cubes" else "classes predicted by the linked model from a minecube cube"
        ),
        "minecube:kind": kind,
        "minecube:complete": bool(manifest.get("complete", True)),
    }  # fmt: skip
    for key in ("sensor", "composite", "mask", "resolution"):
        if key in ds.attrs:
            properties[f"minecube:{key}"] = ds.attrs[key]
    asset_fields = {
        "xarray:open_kwargs": {
            "engine": "zarr", "group": group, "consolidated": False, "decode_coords": "all",
        },
        "zarr:zarr_format": 3,
    }  # fmt: skip
    if schema is not None:
        extensions.append("classification")
        properties["classification:classes"] = _classes(schema)
        asset_fields["classification:classes"] = properties["classification:classes"]
    item = pystac.Item(
        id=group, geometry=geometry, bbox=grid["bbox"], datetime=None, properties=properties,
        stac_extensions=[EXTENSIONS[e] for e in extensions],
    )  # fmt: skip
    item.add_asset("data", pystac.Asset(
        _store_href(store), title=f"{kind} of {group} (Zarr v3 group {group!r})",
        media_type=ZARR, roles=["data"], extra_fields=asset_fields,
    ))  # fmt: skip
    if kind == "cubes" and stores._fs(store)[0].exists(stores.items_path(store, group)):
        href = _absolute(stores.items_path(store, group), store)
        title = "the source items, frozen when the cube was built"
        item.add_link(pystac.Link("derived_from", href, "application/geo+json", title=title))
    if model is not None:
        item.add_link(pystac.Link("derived_from", model, "application/geo+json",
                                  title="the model (STAC MLM item)"))  # fmt: skip
    return item


def _absolute(path: str, store) -> str:
    from minecube import store as stores

    fs, _ = stores._fs(store)
    return fs.unstrip_protocol(path) if stores._is_url(store) else path


def _relative_item(item, store, group: str) -> dict[str, Any]:
    """The item as stored inside the store: hrefs relative to its own file, so that a copy
    of the store describes itself."""
    from minecube import store as stores

    d = item.to_dict(include_self_link=False, transform_hrefs=False)
    d["assets"]["data"]["href"] = "../../.."
    inside = stores._inside(store, "")
    for link in d["links"]:
        if link["href"].startswith(inside):
            link["href"] = _UP + link["href"][len(inside) :]
    d["links"] += [
        {"rel": "collection", "href": "../collection.json", "type": "application/json"},
        {"rel": "parent", "href": "../collection.json", "type": "application/json"},
        {"rel": "root", "href": "../collection.json", "type": "application/json"},
    ]
    d["collection"] = _collection_id(store)
    return d


def describe_group(store: str | os.PathLike, group: str, *, model: str | None = None) -> None:
    """Write the STAC Item of ``group`` into ``store`` and refresh the store's Collection.

    Called by :func:`minecube.cube.to_zarr` and :func:`minecube.segment.segment_to_zarr` once a
    group's data and manifest are written (the group's lease held).
    """
    _write_item(store, group, model=model)
    _write_collection(store)


def _write_item(store, group: str, *, model: str | None = None) -> None:
    """The STAC Item of ``group``, written into the store (hrefs relative to it)."""
    from minecube import store as stores

    fs, _ = stores._fs(store)
    item = group_item(store, group, model=model)
    path = _stac_path(store, "items", f"{group}.json")
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    stores._write_json(fs, path, _relative_item(item, store, group))


def _write_collection(store) -> None:
    """The store's Collection, from the items of all its groups, written into the store."""
    from minecube import store as stores

    fs, _ = stores._fs(store)
    collection = store_collection(store)
    d = collection.to_dict(include_self_link=False, transform_hrefs=False)
    d["links"] = [
        {"rel": "root", "href": "./collection.json", "type": "application/json"},
        *({"rel": "item", "href": f"./items/{i}.json", "type": "application/geo+json"}
          for i in _group_ids(store)),
    ]  # fmt: skip
    stores._write_json(fs, _stac_path(store, "collection.json"), d)


def _group_ids(store) -> list[str]:
    from minecube import store as stores

    fs, _ = stores._fs(store)
    folder = _stac_path(store, "items")
    if not fs.exists(folder):
        return []
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False)]
    return sorted(n.removesuffix(".json") for n in names if n.endswith(".json"))


def _describe_missing(store) -> None:
    """Write the STAC items of a store's groups written before minecube wrote STAC."""
    from minecube import store as stores

    groups = stores.manifests(store)
    if not groups:
        raise CatalogError(
            f"{os.fspath(store)!r} is not a minecube store holding site groups (it has no "
            "group manifests); give a cube or prediction store that minecube wrote"
        )
    missing = sorted(set(groups) - set(_group_ids(store)))
    for group in missing:
        _write_item(store, group)
    if missing:  # once for all of them
        _write_collection(store)


def read_item(path: str | os.PathLike):
    """A STAC Item read from a file or URL, its relative hrefs made absolute."""
    import fsspec
    import pystac

    href = os.fspath(path)
    try:  # as written: pystac's migration would name extension versions we did not write
        with fsspec.open(href, "rb") as f:  # a path or any fsspec URL (s3://…)
            d = json.loads(f.read())
        item = pystac.Item.from_dict(d, href=href, migrate=False, preserve_dict=False)
    except (OSError, ValueError, KeyError) as e:
        raise CatalogError(f"cannot read the STAC item {os.fspath(path)!r}: {e}") from e
    item.make_asset_hrefs_absolute()
    return item


def _inside_link(link: dict, store) -> dict:
    """A link of an item stored inside a store, to a file of the store made absolute."""
    from minecube import store as stores

    if not link["href"].startswith(_UP):
        return link
    return {**link, "href": _absolute(stores._inside(store, link["href"].removeprefix(_UP)), store)}


def store_collection(store: str | os.PathLike):
    """The STAC Collection of a store, from the items of its groups written inside it.

    Examples
    --------
    >>> import xarray as xr
    >>> from minecube.catalog import store_collection  # doctest: +SKIP
    >>> collection = store_collection("demo-output/predictions.zarr")  # doctest: +SKIP
    >>> item = next(collection.get_items())  # doctest: +SKIP
    >>> xr.open_dataset(item.assets["data"])  # doctest: +SKIP
    """
    import pystac

    from minecube import store as stores

    fs, _ = stores._fs(store)
    items = []
    for group in _group_ids(store):
        path = _stac_path(store, "items", f"{group}.json")
        d = stores._read_json(fs, path)
        d["assets"]["data"]["href"] = _store_href(store)
        d["links"] = [
            _inside_link(link, store) for link in d["links"]
            if link["rel"] not in ("collection", "parent", "root")
        ]  # fmt: skip
        items.append(pystac.Item.from_dict(d, preserve_dict=False, migrate=False))
    if not items:
        raise CatalogError(
            f"{os.fspath(store)!r} holds no STAC items; write a group with minecube first"
        )
    kinds = {i.properties["minecube:kind"] for i in items}
    kind = kinds.pop() if len(kinds) == 1 else "groups"
    starts = [dt.datetime.fromisoformat(i.properties["start_datetime"]) for i in items]
    ends = [dt.datetime.fromisoformat(i.properties["end_datetime"]) for i in items]
    placed = [i.bbox for i in items if i.bbox is not None]
    bboxes = np.array(placed or [[-180.0, -90.0, 180.0, 90.0]])
    bbox = [*bboxes[:, :2].min(axis=0), *bboxes[:, 2:].max(axis=0)]
    collection = pystac.Collection(
        id=_collection_id(store),
        description=f"minecube {kind}: {len(items)} site groups of one Zarr v3 store",
        extent=pystac.Extent(
            pystac.SpatialExtent([[float(v) for v in bbox], *placed]),
            pystac.TemporalExtent([[min(starts), max(ends)]]),
        ),
        license="other",
        title=f"minecube {kind} — {_collection_id(store)}",
        extra_fields={"minecube:kind": kind},
    )
    collection.add_items(items)
    return collection


def sha256_multihash(hex_digest: str) -> str:
    """A SHA-256 digest (hex) as the file extension's ``file:checksum``: a multihash, the
    code of SHA-256 (``12``) and the length in bytes (``20``) before it."""
    return "1220" + hex_digest


def model_item(
    card: Mapping[str, Any],
    *,
    weights: str,
    checksum: str,
    size: int,
    training_items: Sequence[str] = (),
):
    """The STAC MLM Item of a model card (:class:`minecube.models.ModelCard` as a dict).

    ``weights`` is the href of the ``.safetensors`` file (relative to the item), ``checksum``
    its SHA-256 (hex), ``size`` its bytes. The whole card is kept as ``minecube:card`` so that
    :func:`minecube.models.load` rebuilds the model exactly from the item.
    """
    import pystac

    spec, norm, schema = card["spec"], card["normalisation"], ClassSchema.from_dict(card["schema"])
    training = card.get("training", {})
    chip = training.get("input_dims") or {"y": 256, "x": 256}
    created = card.get("created") or dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    name = f"{spec['architecture']}-{spec['encoder_name']}"
    pretrained = (training.get("pretrained") or {}).get("provenance") or {}
    properties = {
        "mlm:name": name,
        "mlm:architecture": f"{spec['architecture']} with a {spec['encoder_name']} encoder",
        "mlm:tasks": ["semantic-segmentation"],
        "mlm:framework": "pytorch",
        "mlm:framework_version": card.get("versions", {}).get("torch", ""),
        "mlm:pretrained": spec.get("encoder_weights") is not None,
        "mlm:pretrained_source": pretrained.get("name") or spec.get("encoder_weights"),
        "mlm:batch_size_suggestion": int(training.get("batch_size", 8)),
        "mlm:accelerator": "cuda", "mlm:accelerator_constrained": False,
        "mlm:input": [{
            "name": "reflectance", "bands": [_band(b) for b in card["bands"]],
            "input": {"shape": [-1, len(card["bands"]), chip["y"], chip["x"]],
                      "dim_order": ["batch", "channel", "height", "width"],
                      "data_type": "float32"},
            "value_scaling": [{"type": "z-score", "mean": m, "stddev": s}
                              for m, s in zip(norm["mean"], norm["std"], strict=True)],
            "description": "surface reflectance (NDVI computed from red and nir), one period",
        }],
        "mlm:output": [{
            "name": "classes", "tasks": ["semantic-segmentation"],
            "result": {"shape": [-1, int(spec["classes"]), chip["y"], chip["x"]],
                       "dim_order": ["batch", "channel", "height", "width"],
                       "data_type": "float32"},
            "classification:classes": [c for c in _classes(schema) if not c.get("nodata")],
            "post_processing_function": None,
        }],
        "minecube:metrics": card.get("metrics", {}),
        **({"minecube:pretrained": pretrained} if pretrained else {}),
        "minecube:card": dict(card),
        "start_datetime": None, "end_datetime": None,
    }  # fmt: skip
    properties.pop("start_datetime"), properties.pop("end_datetime")
    item = pystac.Item(
        id=name, geometry=None, bbox=None,
        datetime=dt.datetime.fromisoformat(created.replace("Z", "+00:00")),
        properties=properties,
        stac_extensions=[EXTENSIONS[e] for e in ("mlm", "file", "eo", "classification")],
    )  # fmt: skip
    item.add_asset("weights", pystac.Asset(
        weights, title="trained weights (safetensors)", media_type="application/octet-stream",
        roles=["mlm:model", "mlm:weights", "data"],
        extra_fields={"mlm:artifact_type": "safetensors", "file:size": int(size),
                      "eo:bands": [_eo_band(b) for b in card["bands"]],
                      "file:checksum": sha256_multihash(checksum)},
    ))  # fmt: skip
    if not training_items and training.get("cubes"):  # the cube items it was trained on
        store = training["cubes"]
        sites = [*training.get("sites", []), *training.get("val_sites", [])]
        training_items = [f"{store}/.minecube/{_STAC}/items/{s}.json" for s in sites]
    for href in training_items:
        item.add_link(pystac.Link("derived_from", href, "application/geo+json",
                                  title="training data (a cube's STAC item)"))  # fmt: skip
    if pretrained.get("url"):
        title = f"pretrained weights' source (licence {pretrained.get('licence', 'unknown')})"
        item.add_link(pystac.Link("via", pretrained["url"], title=title))
    return item


def _eo_band(name: str) -> dict[str, str]:
    """An input band as the eo extension describes it (what MLM's input bands refer to)."""
    common = {"red", "green", "blue", "nir", "swir16", "swir22", "rededge", "coastal"}
    return {"name": name, **({"common_name": name} if name in common else {})}


def _band(name: str) -> str | dict[str, str]:
    """An MLM input band: its name, or for NDVI how it is computed from the others."""
    if name == "ndvi":
        return {"name": "ndvi", "format": "python", "expression": "(nir - red) / (nir + red)"}
    return name


def publish(
    stores: Sequence[str | os.PathLike],
    *,
    out: str | os.PathLike,
    models: Sequence[str | os.PathLike] = (),
    title: str = "minecube outputs",
    overwrite: bool = False,
) -> Path:
    """Write a static STAC catalogue of stores and models, for a STAC browser or any client.

    Each store becomes a Collection of its groups' items (from the STAC written inside it),
    each model (an MLM item path, ``<model>.mlm.json``) an item of a ``models`` collection;
    asset hrefs are made relative to ``out`` where both are on this disk. The catalogue is
    written whole or not at all, and files in ``out`` that minecube did not write are refused
    unless ``overwrite`` (:mod:`minecube.outputs`). Returns the path of ``catalog.json``.

    Examples
    --------
    ``publish(["out/cubes.zarr", "out/predictions.zarr"], out="out/catalog",
    models=["out/model/fpn.mlm.json"])``, or ``minecube publish out/cubes.zarr --out …``.
    """
    import pystac

    from minecube.outputs import staged

    out = Path(out)
    catalog = pystac.Catalog(id="minecube", description=title, title=title)
    for store in stores:
        _describe_missing(store)
        catalog.add_child(store_collection(store))
    if models:
        collection = pystac.Collection(
            id="models", description="minecube models (STAC Machine Learning Model items)",
            extent=pystac.Extent(pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]),
                                 pystac.TemporalExtent([[None, None]])),
            license="other", stac_extensions=[EXTENSIONS["mlm"]],
        )  # fmt: skip
        for path in models:
            collection.add_item(read_item(path))
        catalog.add_child(collection)
    with staged(out, overwrite=overwrite, prune=True) as tmp:  # all of it, or none
        catalog.normalize_hrefs(str(tmp.absolute()))
        for item in catalog.get_items(recursive=True):
            # relative to where the item will be once the staging folder is moved in
            folder = Path(item.get_self_href()).parent
            final = out.absolute() / folder.relative_to(tmp.absolute())
            for asset in item.assets.values():
                if "://" not in asset.href:
                    asset.href = os.path.relpath(asset.get_absolute_href(), final)
        catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return out / "catalog.json"
