"""Coverage of the error-adjusted areas' 95 % intervals, by repeated sampling of the demo maps.

Run after `make demo`: .venv/bin/python benchmarks/bench_intervals.py [--reps 20] [--prior 0.5 0.1]
[--hierarchical]

Draws many stratified samples (seeds 0 … reps-1) of every site-quarter observed at 80 % or more
of the demo model's predictions (the *good* map) and of the same maps degraded (pits two pixels
too wide and 4 % of pixels wrong: the *poor* map), labels each from the demo world's truth
rasters, and counts how often the 95 % intervals hold the true area: for every class covering
5 % of a map or more, for the mining footprint, and for the mining gain and loss between two
dates (change strata). Both methods run on the same samples, so the ratio of their widths is
measured in one run. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd
import xarray as xr

from minecube import stats
from minecube.classes import DEFAULT_CLASSES
from minecube.demo import open_world
from minecube.report import open_all_predictions
from minecube.stats import (
    SampleSizeWarning,
    adjusted_areas,
    adjusted_mining_area,
    reference_from,
    sample,
)

METHODS = ("jeffreys", "olofsson")
CHANGE = ("2022-04-01", "2024-04-01")  # two dry-season quarters every demo site has
IDS = np.array([c.id for c in DEFAULT_CLASSES])
MINING = np.array([c.id for c in DEFAULT_CLASSES.mining])


def _truth(world, pred: xr.DataArray) -> xr.DataArray:
    """The truth rasters of a prediction's periods (each its year's), on its grid."""
    layers = [
        world.truth(pred.name, pd.Timestamp(t).year).rio.reproject_match(pred, nodata=0)
        for t in pred.time.values
    ]
    truth = xr.concat(layers, "time").assign_coords(time=pred.time.values)
    return truth.assign_attrs(DEFAULT_CLASSES.cf_attrs()).rio.write_nodata(0)


def _degraded(pred: xr.DataArray, seed: int = 0) -> xr.DataArray:
    """The map made poor: pits two pixels too wide and 4 % of the observed pixels wrong."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    ids = pred.values.copy()
    for k in range(len(ids)):
        observed = np.isin(ids[k], IDS)
        ids[k][ndimage.binary_dilation(ids[k] == 1, iterations=2) & observed] = 1
        flip = (rng.random(ids[k].shape) < 0.04) & observed
        ids[k][flip] = rng.choice(IDS, flip.sum())
    return pred.copy(data=ids)


def _maps(world, path: str):
    """(good maps, poor maps, truths) of the site-quarters observed at 80 % or more, and the
    full series of each site for the change strata. Pixels the truth leaves unlabelled (the
    grid's edge beyond the truth raster) are set unobserved, so that what is estimated — the
    areas over the observed pixels — is exactly what the truth measures."""
    good, poor, truths, series = {}, {}, {}, {}
    for site, pred in open_all_predictions(path).items():
        pred = pred.load().rename(site)
        truths[site] = _truth(world, pred)
        pred = pred.copy(data=np.where(truths[site].values > 0, pred.values, pred.rio.nodata))
        observed = [np.isin(pred.values[k], IDS).mean() for k in range(pred.sizes["time"])]
        series[site] = pred
        kept = pred.isel(time=[k for k, o in enumerate(observed) if o >= 0.8])
        good[site], poor[site] = kept, _degraded(kept)
    return good, poor, truths, series


def _true_shares(maps, truths):
    """The truth's class shares and mining share over each map's observed pixels that the
    truth labels (a point on an unlabelled pixel gets no reference, so the estimates are of
    those pixels too)."""
    out = {}
    for site, pred in maps.items():
        pixel_ha = abs(pred.rio.resolution()[0] * pred.rio.resolution()[1]) / 1e4
        for k, when in enumerate(pred.time.values):
            truth = truths[site].sel(time=when).values
            observed = np.isin(pred.values[k], IDS) & (truth > 0)
            truth = truth[observed]
            out[site, pd.Timestamp(when)] = {
                "class": {int(c): (truth == c).mean() for c in IDS},
                "mining": np.isin(truth, MINING).mean(),
                "observed_ha": np.isin(pred.values[k], IDS).sum() * pixel_ha,  # the map's
            }
    return out


def _true_change(series, truths):
    """The truth's share of mining gain and loss between the two CHANGE periods, over the
    pixels both maps observe and the truth labels at both dates."""
    out = {}
    for site, pred in series.items():
        first, last = (pred.sel(time=pd.Timestamp(t)).values for t in CHANGE)
        then, later = (truths[site].sel(time=pd.Timestamp(t)).values for t in CHANGE)
        observed = np.isin(first, IDS) & np.isin(last, IDS) & (then > 0) & (later > 0)
        was, now = np.isin(then, MINING), np.isin(later, MINING)
        out[site] = {
            "mining gain": (now & ~was)[observed].mean(),
            "mining loss": (was & ~now)[observed].mean(),
        }
    return out


def _held(table, keep, truth_of) -> tuple[list[bool], list[float], list[str]]:
    """Whether each kept row's interval holds its true share of the map (``truth_of``), its
    width relative to that share, and its class."""
    held, widths, names = [], [], []
    total = table.groupby(["site_id", "time"]).mapped_ha.transform("sum")  # the observed area
    named = table.rename(columns={"class": "class_name"})[keep]
    for row, whole in zip(named.itertuples(), total[keep], strict=True):
        truth = truth_of(row)
        if truth is None:
            continue
        low, high = row.ci_low_ha / whole, row.ci_high_ha / whole
        held.append(low <= truth <= high)
        widths.append((high - low) / truth if truth else np.nan)
        names.append(row.class_name)
    return held, widths, names


def _classes(maps, truths, shares, n, per_stratum, reps):
    """Coverage and width for the classes (≥ 5 % of a map) and the mining footprint."""
    out = {m: {"classes": ([], []), "footprint": ([], [])} for m in METHODS}
    for r in range(reps):
        labelled = reference_from(sample(maps, n=n, min_per_stratum=per_stratum, seed=r), truths)
        for method in METHODS:
            table = adjusted_areas(maps, labelled, method=method)
            whole = table.groupby(["site_id", "time"]).mapped_ha.transform("sum")
            held, widths, names = _held(table, table.mapped_ha / whole >= 0.05, lambda row: shares[
                row.site_id, pd.Timestamp(row.time)]["class"][row.class_id])  # fmt: skip
            out[method]["classes"][0].extend(held)
            out[method]["classes"][1].extend(widths)
            for h, w, name in zip(held, widths, names, strict=True):  # and class by class
                cases = out[method].setdefault(f"classes: {name}", ([], []))
                cases[0].append(h)
                cases[1].append(w)
            footprint = adjusted_mining_area(maps, labelled, method=method)
            for row in footprint.itertuples():
                truths_here = shares[row.site_id, pd.Timestamp(row.time)]
                truth, total = truths_here["mining"], truths_here["observed_ha"]
                low, high = row.ci_low_ha / total, row.ci_high_ha / total
                out[method]["footprint"][0].append(low <= truth <= high)
                out[method]["footprint"][1].append((high - low) / truth)
    return out


def _change(series, truths, change, n, per_stratum, reps):
    """Coverage and width for the mining gain and loss between the CHANGE periods."""
    out = {m: {"gain and loss": ([], [])} for m in METHODS}
    for r in range(reps):
        points = sample(series, n=n, strata="change", periods=CHANGE,
                        min_per_stratum=per_stratum, seed=r)  # fmt: skip
        labelled = reference_from(points, truths)
        for method in METHODS:
            table = adjusted_areas(series, labelled, method=method)
            keep = table["class"].isin(["mining gain", "mining loss"])
            held, widths, _ = _held(table, keep, lambda row: change[row.site_id][row.class_name])
            out[method]["gain and loss"][0].extend(held)
            out[method]["gain and loss"][1].extend(widths)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20, help="samples per setting")
    parser.add_argument("--world", default="demo-world")
    parser.add_argument("--predictions", default="demo-output/predictions.zarr")
    parser.add_argument("--prior", type=float, nargs="*", help="sensitivity: each parameter "
                        "of the Beta prior of a class's own strata (default ½), at the demo's "
                        "setting only (good map, n = 300, 30 per stratum)")  # fmt: skip
    parser.add_argument("--hierarchical", action="store_true", help="experiment: the "
                        "classes' own strata given the prior their map's strata share (a "
                        "beta-binomial) instead of Jeffreys', at the demo's setting")  # fmt: skip
    args = parser.parse_args()
    if args.prior:
        _sensitivity(args)
        return
    if args.hierarchical:
        _hierarchical(args)
        return
    warnings.simplefilter("ignore", SampleSizeWarning)  # small strata are the point here
    world = open_world(args.world)
    good, poor, truths, series = _maps(world, args.predictions)
    maps = sum(m.sizes["time"] for m in good.values())
    print(f"{maps} site-quarters, {args.reps} samples per setting\n")
    print("| map | n | min per stratum | areas | coverage jeffreys | coverage olofsson "
          "| width jeffreys (× truth) | width olofsson | width ratio |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    change = _true_change(series, truths)
    start = time.perf_counter()
    for name, chosen in (("good", good), ("poor", poor)):
        shares = _true_shares(chosen, truths)
        for n, per_stratum in ((100, 0), (300, 0), (300, 30), (1000, 0)):
            found = _classes(chosen, truths, shares, n, per_stratum, args.reps)
            if name == "good" and n == 300:
                found = {m: found[m] | _change(series, truths, change, n, per_stratum,
                                               args.reps)[m] for m in METHODS}  # fmt: skip
            for what in found["jeffreys"]:
                if what.startswith("classes: ") and (name, n, per_stratum) != ("good", 300, 30):
                    continue  # class by class at the demo's setting only
                (hj, wj), (ho, wo) = found["jeffreys"][what], found["olofsson"][what]
                mj, mo = np.nanmedian(wj), np.nanmedian(wo)
                ratio = f"{mj / mo:.2f}" if mo else "— (zero-width)"
                print(f"| {name} | {n} | {per_stratum} | {what} ({len(hj)}) | {np.mean(hj):.1%} "
                      f"| {np.mean(ho):.1%} | {mj:.3f} | {mo:.3f} | {ratio} |",
                      flush=True)  # fmt: skip
    print(
        f"\n{len(good)} sites; {time.perf_counter() - start:.0f} s; widths are medians of "
        "(high − low) / true area; coverage counts (site, period, class) cases"
    )


def _class_by_class(args, variants) -> None:
    """Coverage and width class by class at the demo's setting (good map, n = 300, 30 per
    stratum) on the same samples, for each of ``variants``: (label, a call that sets it up).
    Jeffreys' own-strata prior and interval are restored after."""
    warnings.simplefilter("ignore", SampleSizeWarning)
    world = open_world(args.world)
    good, _, truths, _ = _maps(world, args.predictions)
    shares = _true_shares(good, truths)
    print("| own-strata prior | areas | coverage | width (× truth) |")
    print("|---|---|---|---|")
    prior = stats._OWN_PRIOR
    try:
        for label, set_up in variants:
            set_up()
            found = _classes(good, truths, shares, 300, 30, args.reps)["jeffreys"]
            for what, (held, widths) in sorted(found.items()):
                print(f"| {label} | {what} ({len(held)}) | {np.mean(held):.1%} "
                      f"| {np.nanmedian(widths):.3f} |", flush=True)  # fmt: skip
    finally:
        stats._OWN_PRIOR, stats._interval = prior, _JEFFREYS


def _sensitivity(args) -> None:
    """--prior: each Beta prior of the classes' own strata."""
    _class_by_class(args, [(f"Beta({p:g}, {p:g})", lambda p=p: setattr(stats, "_OWN_PRIOR", p))
                           for p in args.prior])  # fmt: skip


_MU = 1 / (1 + np.exp(-np.linspace(-9.0, 9.0, 181)))  # logit grid
_KAPPA = np.logspace(-1.0, 4.0, 61)  # log grid


def _pooled_prior(errors, n_i, rng, size):
    """Draws of the Beta(μκ, (1 − μ)κ) prior of the commission error rates of a map's strata
    from its posterior given each sampled stratum's errors (beta-binomial on a grid; Jeffreys'
    prior on μ, p(κ) ∝ κ^−3/2 as in Gelman et al.'s rat-tumour example)."""
    from scipy.special import betaln

    sampled = n_i > 0
    e, c = errors[sampled], (n_i - errors)[sampled]
    a, b = _MU[:, None] * _KAPPA, (1 - _MU[:, None]) * _KAPPA
    loglik = (betaln(a[..., None] + e, b[..., None] + c) - betaln(a, b)[..., None]).sum(-1)
    logpost = loglik + 0.5 * np.log(_MU * (1 - _MU))[:, None] - 0.5 * np.log(_KAPPA)
    post = np.exp(logpost - logpost.max()).ravel()
    pick = rng.choice(post.size, size=size, p=post / post.sum())
    return a.ravel()[pick], b.ravel()[pick]


def _pooled_interval(w, rows, n_i, method, rng, own=None):
    """stats._interval with each class's own stratum (the classes' error matrix only; the
    footprint keeps Jeffreys') drawn under its map's pooled commission prior."""
    if own is not None or method != "jeffreys":
        return _JEFFREYS(w, rows, n_i, method, rng, own)
    share, _ = stats._stratified(w, rows, n_i)
    n = np.broadcast_to(n_i[:, None], rows.shape).astype(float)
    k = rows * n
    others = ~np.eye(*rows.shape, dtype=bool)
    group = (n * others).sum(axis=0)
    prior = 0.5 * n / np.where(group > 0, group, 1.0)  # the other strata's, as in stats
    a, b = np.where(n > 0, k + prior, 0.5), np.where(n > 0, n - k + prior, 0.5)
    ea, eb = _pooled_prior(n_i - np.diag(k), n_i, rng, stats._DRAWS)
    own_sampled = ~others & (n > 0)
    a = np.where(own_sampled, k + eb[:, None, None], a)
    b = np.where(own_sampled, n - k + ea[:, None, None], b)
    total = np.einsum("i,dij->dj", w, rng.beta(a, b))
    low, high = np.quantile(total, [0.025, 0.975], axis=0)
    low = np.where(k.sum(axis=0) == 0, 0.0, low)
    high = np.where((n - k).sum(axis=0) == 0, 1.0, high)
    return share, total.std(axis=0), np.minimum(low, share), np.maximum(high, share)


_JEFFREYS = stats._interval


def _hierarchical(args) -> None:
    """--hierarchical: Jeffreys' own-strata prior against the pooled one."""
    _class_by_class(args, [
        ("Jeffreys (default)", lambda: setattr(stats, "_interval", _JEFFREYS)),
        ("pooled", lambda: setattr(stats, "_interval", _pooled_interval)),
    ])  # fmt: skip


if __name__ == "__main__":
    main()
