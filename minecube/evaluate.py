"""Accuracy of a trained model on held-out sites: confusion matrices, IoU, F1, mIoU.

Scores are computed from pixel counts. A class's IoU is defined where it occurs in the truth or
in the prediction (union > 0); mIoU averages those classes, so predicting a class that is absent
costs as much as missing one that is present. Pixels without a label (``nodata``) or without a
valid observation are not counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from minecube.chips import _target, features
from minecube.classes import IGNORE_INDEX, ClassSchema

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

    from minecube.models import Segmenter

__all__ = ["Evaluation", "confusion_matrix", "evaluate", "scores"]


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


def _majority_baseline(
    train_labels: Mapping[str, xr.DataArray],
    cubes: Mapping[str, xr.Dataset],
    labels: Mapping[str, xr.DataArray],
    schema: ClassSchema,
) -> tuple[str, np.ndarray]:
    """The trivial model: every observed pixel gets the training sites' most frequent class.

    Returns that class's name and the confusion matrix on ``labels``, counted on the same
    pixels as :func:`evaluate` (labelled and observed in every band).
    """
    n = len(schema)
    counts = sum(
        np.bincount(schema.to_index(lab.values).ravel(), minlength=256)[:n]
        for lab in train_labels.values()
    )
    majority = int(np.argmax(counts))
    cm = np.zeros((n, n), dtype=np.int64)
    for site, cube in cubes.items():
        target = _target(labels[site], cube, schema)
        observed = np.isfinite(cube.reflectance.transpose("time", "band", "y", "x").values)
        pred = np.where(observed.all(axis=1), majority, IGNORE_INDEX)
        cm += confusion_matrix(pred, target, n)
    return schema.names[majority], cm


@dataclass(frozen=True)
class Evaluation:
    """Results of :func:`evaluate`, as tidy tables."""

    summary: pd.DataFrame
    """One row per group: ``level`` (all, site_id, climate, commodity), ``group``, ``miou``,
    ``overall_accuracy``, ``labelled_px``."""
    classes: pd.DataFrame
    """One row per group and class: ``iou``, ``f1``, ``precision``, ``recall``, ``truth_px``,
    ``predicted_px``."""
    confusion: xr.DataArray
    """Pixel counts (site_id, truth, predicted)."""

    def table(self, level: str = "all") -> pd.DataFrame:
        """IoU per class (rows) and group (columns), with mIoU as the last row."""
        rows = self.classes[self.classes.level == level]
        wide = rows.pivot(index="class", columns="group", values="iou")
        wide = wide.reindex(rows["class"].drop_duplicates())
        summary = self.summary[self.summary.level == level].set_index("group")["miou"]
        wide.loc["mIoU"] = summary
        return wide


def evaluate(
    model: Segmenter,
    cubes: Mapping[str, xr.Dataset],
    labels: Mapping[str, xr.DataArray],
    sites: pd.DataFrame | None = None,
    *,
    by: Sequence[str] = ("climate", "commodity"),
    batch_size: int = 4,
) -> Evaluation:
    """Score a trained model on whole cubes against their labels, site by site.

    Parameters
    ----------
    model
        A trained model with its card (:func:`minecube.train.fit`, :func:`minecube.models.load`).
    cubes, labels
        ``{site_id: cube}`` and ``{site_id: label raster}`` of the sites to score (held out).
    sites
        Site table with ``site_id`` and the ``by`` columns, to group sites.
    by
        Site-table columns to group by, besides each site and all sites together.

    Returns
    -------
    Evaluation
        Summary and per-class tables for ``all`` sites, each ``site_id`` and each ``by`` group.

    Examples
    --------
    With a model from :func:`minecube.train.fit` and the held-out sites of a split::

        result = evaluate(model, {s: cubes[s] for s in split.test},
                          {s: labels[s] for s in split.test}, sites)
        result.summary            # mIoU and overall accuracy: all, per site, climate, commodity
        result.table("climate")   # IoU per class × climate zone
    """
    import pandas as pd
    import xarray as xr

    if model.card is None:
        raise ValueError("the model has no card; evaluate a model from fit() or load()")
    schema = model.card.schema
    n = len(schema)
    per_site = {}
    for site, cube in cubes.items():
        model.card.check_bands([str(b) for b in cube.reflectance.band.values])
        target = _target(labels[site], cube, schema)
        per_site[site] = confusion_matrix(_predict_index(model, cube, batch_size), target, n)
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
        summary.append({"level": level, "group": group, **_summary(cm), "sites": len(members)})
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
    return Evaluation(pd.DataFrame(summary), class_table, confusion)
