"""Accuracy of a trained model on held-out sites: confusion matrices, IoU, F1, precision,
recall, mIoU with a bootstrap interval over sites, and the trivial models' scores beside them.

Scores are computed from pixel counts. A class's IoU is defined where it occurs in the truth or
in the prediction (union > 0); mIoU averages those classes, so predicting a class that is absent
costs as much as missing one that is present. Pixels without a label (``nodata``) or without a
valid observation are not counted.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from minecube.chips import _target, features
from minecube.classes import IGNORE_INDEX, ClassSchema

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

    from minecube.models import Segmenter

__all__ = ["BASELINES", "Evaluation", "baselines", "confusion_matrix", "evaluate", "scores"]


def confusion_matrix(pred: np.ndarray, target: np.ndarray, classes: int) -> np.ndarray:
    """Pixel counts (truth row, predicted column) of model indices; IGNORE_INDEX is skipped.

    >>> confusion_matrix(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 255]), 2)
    array([[1, 1],
           [0, 1]])
    """
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    keep = (target != IGNORE_INDEX) & (pred < classes)
    flat = target[keep].astype(np.int64) * classes + pred[keep].astype(np.int64)
    return np.bincount(flat, minlength=classes * classes).reshape(classes, classes)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def scores(cm: np.ndarray, schema: ClassSchema) -> pd.DataFrame:
    """Per-class IoU, F1, precision and recall from a confusion matrix.

    Examples
    --------
    >>> from minecube.classes import DEFAULT_CLASSES
    >>> cm = np.diag(np.arange(10)) ; cm[1, 2] = 1
    >>> scores(cm, DEFAULT_CLASSES).iloc[1][["class", "iou", "truth_px"]].to_dict()
    {'class': 'waste_dump', 'iou': 0.5, 'truth_px': 2}
    """
    import pandas as pd

    tp = np.diag(cm).astype(float)
    truth, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision, recall = _ratio(tp, predicted), _ratio(tp, truth)
    return pd.DataFrame(
        {
            "class": schema.names,
            "iou": _ratio(tp, truth + predicted - tp),
            "f1": _ratio(2 * tp, truth + predicted),
            "precision": precision,
            "recall": recall,
            "truth_px": truth,
            "predicted_px": predicted,
        }
    )


def _summary(cm: np.ndarray) -> dict[str, float]:
    tp = np.diag(cm).astype(float)
    union = cm.sum(axis=1) + cm.sum(axis=0) - tp
    iou = _ratio(tp, union)
    total = cm.sum()
    return {
        "miou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
        "overall_accuracy": float(tp.sum() / total) if total else float("nan"),
        "labelled_px": int(total),
    }


def _predict_index(model: Segmenter, cube: xr.Dataset, batch_size: int = 4) -> np.ndarray:
    """Model indices (time, y, x) for a whole cube, IGNORE_INDEX where unobserved."""
    import torch

    card = model.card
    x = features(cube, card.bands).values  # (T, C, H, W)
    observed = np.isfinite(x).all(axis=1)
    x = card.normalisation.apply(x)
    frames = model.spec.frames
    if frames > 1:  # each period with the frames - 1 before it (the first repeated)
        padded = np.concatenate([np.repeat(x[:1], frames - 1, axis=0), x])
        x = np.stack([np.moveaxis(padded[t : t + frames], 0, 1) for t in range(len(x))])
    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(device)
            out.append(model(batch).argmax(1).to(torch.uint8).cpu().numpy())
    pred = np.concatenate(out)
    return np.where(observed, pred, IGNORE_INDEX).astype(np.uint8)


BASELINES = ("majority", "background")
"""The trivial models every score is printed beside (:func:`baselines`):

- ``"majority"``: every observed pixel gets the most frequent class (of the training labels
  when given, else of the labels scored: the best any constant map can do there);
- ``"background"``: every observed pixel gets the background class (the schema's
  ``background``/``other`` class, else its most frequent non-mining class): a map with no mine.
"""


def _baseline_matrices(
    cubes: Mapping[str, xr.Dataset],
    labels: Mapping[str, xr.DataArray],
    schema: ClassSchema,
    train_labels: Mapping[str, xr.DataArray] | None = None,
) -> dict[str, tuple[str, dict[str, np.ndarray]]]:
    """Each baseline's predicted class and its confusion matrix per site, counted on the
    pixels :func:`evaluate` counts (labelled and observed in every band)."""
    n = len(schema)
    targets = {site: _target(labels[site], cube, schema) for site, cube in cubes.items()}
    observed = {
        site: np.isfinite(cube.reflectance.transpose("time", "band", "y", "x").values).all(axis=1)
        for site, cube in cubes.items()
    }
    if train_labels is not None:
        counts = sum(
            np.bincount(schema.to_index(lab.values).ravel(), minlength=256)[:n]
            for lab in train_labels.values()
        )
    else:
        counts = sum(
            np.bincount(np.where(observed[s], t, IGNORE_INDEX).ravel(), minlength=256)[:n]
            for s, t in targets.items()
        )
    counts = np.asarray(counts)
    land = [i for i, c in enumerate(schema) if not c.is_mining]
    if schema.background is not None:
        background = schema.ids.index(schema.background.id)
    elif land:
        background = max(land, key=lambda i: counts[i])
    else:
        background = None
    chosen = {"majority": int(np.argmax(counts)), "background": background}
    out = {}
    for name, index in chosen.items():
        if index is None:
            continue
        per_site = {
            site: confusion_matrix(np.where(observed[site], index, IGNORE_INDEX), t, n)
            for site, t in targets.items()
        }
        out[name] = (schema.names[index], per_site)
    return out


def baselines(
    cubes: Mapping[str, xr.Dataset],
    labels: Mapping[str, xr.DataArray],
    *,
    schema: ClassSchema,
    train_labels: Mapping[str, xr.DataArray] | None = None,
) -> pd.DataFrame:
    """The scores of the trivial models (:data:`BASELINES`) on the sites given.

    A model that does not beat them has learnt nothing: on a set where a mine covers 6 % of
    the pixels, "all background" is 94 % accurate. :func:`evaluate` prints them beside every
    score; this is them alone.

    Returns
    -------
    pandas.DataFrame
        One row per baseline: ``baseline``, ``class`` (the class it predicts), ``miou``,
        ``overall_accuracy``, ``labelled_px``, and ``iou_<class>`` per class.

    Examples
    --------
    ``baselines(test_cubes, test_labels, schema=DEFAULT_CLASSES, train_labels=train_labels)``
    """
    import pandas as pd

    rows = []
    for name, (predicted, per_site) in _baseline_matrices(cubes, labels, schema,
                                                          train_labels).items():  # fmt: skip
        cm = sum(per_site.values())
        table = scores(cm, schema)
        rows.append({"baseline": name, "class": predicted, **_summary(cm),
                     **{f"iou_{c}": v for c, v in zip(table["class"], table["iou"],
                                                       strict=True)}})  # fmt: skip
    return pd.DataFrame(rows)


def _miou_interval(matrices: list[np.ndarray], *, resamples: int, seed: int) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of mIoU, resampling whole sites (NaN under 2)."""
    if len(matrices) < 2 or resamples <= 0:
        return float("nan"), float("nan")
    from scipy.stats import bootstrap

    stack = np.stack(matrices)

    def miou(index):
        return _summary(stack[np.asarray(index, dtype=int)].sum(axis=0))["miou"]

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a group whose sites score alike is degenerate
        result = bootstrap((np.arange(len(matrices)),), miou, n_resamples=resamples,
                           method="percentile", vectorized=False, rng=seed)  # fmt: skip
    low, high = result.confidence_interval
    return float(low), float(high)


@dataclass(frozen=True)
class Evaluation:
    """Results of :func:`evaluate`, as tidy tables."""

    summary: pd.DataFrame
    """One row per group: ``level`` (all, site_id, climate, commodity), ``group``, ``miou``
    with its bootstrap interval over sites ``miou_low``/``miou_high`` (95 %, groups of two
    sites or more), ``overall_accuracy``, ``labelled_px``, ``sites``, and beside them the
    baselines' ``majority_miou``, ``majority_accuracy``, ``background_miou`` and
    ``background_accuracy``."""
    classes: pd.DataFrame
    """One row per group and class: ``iou``, ``f1``, ``precision``, ``recall``, ``truth_px``,
    ``predicted_px``."""
    confusion: xr.DataArray
    """Pixel counts (site_id, truth, predicted)."""
    baselines: dict[str, str] = field(default_factory=dict)
    """Baseline → the class it predicts (:data:`BASELINES`)."""

    def table(self, level: str = "all") -> pd.DataFrame:
        """IoU per class (rows) and group (columns), with mIoU and the baselines' mIoU as the
        last rows."""
        rows = self.classes[self.classes.level == level]
        wide = rows.pivot(index="class", columns="group", values="iou")
        wide = wide.reindex(rows["class"].drop_duplicates())
        summary = self.summary[self.summary.level == level].set_index("group")
        wide.loc["mIoU"] = summary["miou"]
        for name, predicted in self.baselines.items():
            wide.loc[f"mIoU, all {predicted} ({name})"] = summary[f"{name}_miou"]
        return wide


def evaluate(
    model: Segmenter,
    cubes: Mapping[str, xr.Dataset],
    labels: Mapping[str, xr.DataArray],
    sites: pd.DataFrame | None = None,
    *,
    by: Sequence[str] = ("climate", "commodity"),
    batch_size: int = 4,
    train_labels: Mapping[str, xr.DataArray] | None = None,
    any_sensor: bool = False,
    resamples: int = 1000,
    seed: int = 0,
) -> Evaluation:
    """Score a trained model on whole cubes against their labels, site by site, beside the
    scores of trivial models.

    Labels whose class schema is not the model's are refused (id 1 must mean the same class
    on both sides), and so are cubes of another sensor than the model was trained on.

    Parameters
    ----------
    model
        A trained model with its card (:func:`minecube.train.fit`, :func:`minecube.models.load`).
    cubes, labels
        ``{site_id: cube}`` and ``{site_id: label raster}`` of the sites to score (held out);
        labels carry their schema (:func:`minecube.labels.rasterize`, ``from_raster``).
    sites
        Site table with ``site_id`` and the ``by`` columns, to group sites.
    by
        Site-table columns to group by, besides each site and all sites together.
    train_labels
        The training sites' labels: the majority baseline predicts their most frequent class
        (default: the scored labels', the strongest constant map).
    any_sensor
        Score cubes of another sensor than the model's anyway.
    resamples, seed
        Bootstrap resamples of the sites for the 95 % interval of mIoU (0: none), and its seed.

    Returns
    -------
    Evaluation
        Summary and per-class tables for ``all`` sites, each ``site_id`` and each ``by`` group,
        with the baselines (:data:`BASELINES`) beside every score.

    Raises
    ------
    minecube.models.CheckpointError
        Labels of another schema (both named), cubes of another sensor, missing bands.

    Examples
    --------
    With a model from :func:`minecube.train.fit` and the held-out sites of a split::

        result = evaluate(model, {s: cubes[s] for s in split.test},
                          {s: labels[s] for s in split.test}, sites)
        result.summary            # mIoU (95 % interval), accuracy and the baselines' beside
        result.table("climate")   # IoU per class × climate zone
    """
    import pandas as pd
    import xarray as xr

    if model.card is None:
        raise ValueError("the model has no card; evaluate a model from fit() or load()")
    schema = model.card.schema
    n = len(schema)
    missing = sorted(set(cubes) - set(labels))
    if missing:
        raise ValueError(f"sites {missing} have a cube but no labels")
    for site, cube in cubes.items():  # every refusal before any prediction
        model.card.check_bands([str(b) for b in cube.reflectance.band.values])
        model.card.check_sensor(cube, any_sensor=any_sensor)
        model.card.check_labels(labels[site])
    per_site = {}
    for site, cube in cubes.items():
        target = _target(labels[site], cube, schema)
        per_site[site] = confusion_matrix(_predict_index(model, cube, batch_size), target, n)
    trivial = _baseline_matrices(cubes, labels, schema, train_labels)
    groups: list[tuple[str, str, list[str]]] = [("all", "all", list(per_site))]
    groups += [("site_id", s, [s]) for s in per_site]
    if sites is not None:
        table = sites.set_index(sites["site_id"].astype(str))
        for column in by:
            for value, members in table.loc[list(per_site)].groupby(column).groups.items():
                groups.append((column, str(value), list(members)))
    summary, classes = [], []
    for level, group, members in groups:
        cm = sum(per_site[s] for s in members)
        low, high = _miou_interval([per_site[s] for s in members], resamples=resamples, seed=seed)
        row = {"level": level, "group": group, **_summary(cm), "miou_low": low,
               "miou_high": high, "sites": len(members)}  # fmt: skip
        for name, (_, matrices) in trivial.items():
            base = _summary(sum(matrices[s] for s in members))
            row |= {f"{name}_miou": base["miou"], f"{name}_accuracy": base["overall_accuracy"]}
        summary.append(row)
        classes.append(scores(cm, schema).assign(level=level, group=group))
    confusion = xr.DataArray(
        np.stack(list(per_site.values())),
        dims=("site_id", "truth", "predicted"),
        coords={"site_id": list(per_site), "truth": schema.names, "predicted": schema.names},
        name="pixels",
        attrs={"units": "px"},
    )
    class_table = pd.concat(classes, ignore_index=True)
    front = ["level", "group", "class"]
    class_table = class_table[front + [c for c in class_table.columns if c not in front]]
    chosen = {name: predicted for name, (predicted, _) in trivial.items()}
    return Evaluation(pd.DataFrame(summary), class_table, confusion, chosen)
