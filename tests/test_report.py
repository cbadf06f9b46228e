"""The HTML report and the `minecube report` command, on demo cubes and labels."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from minecube.cli import main
from minecube.report import open_all_predictions, write_report
from minecube.stats import StatsError

SITES = ("pilbara-iron", "hunter-coal", "ashanti-gold")


def _observed_labels(lab, site):
    """The site's labels where its cube has an observation: a perfect prediction with clouds."""
    labels, cube = lab["labels"][site], lab["cubes"][site]
    pred = labels.where(cube.valid_count > 0, 0).astype("uint8")
    return pred.assign_attrs(labels.attrs, site_id=site).rio.write_crs(labels.rio.crs)


def _links(page):
    html = page.read_text()
    return re.findall(r'(?:src|href)="([^"#]+)"', html), html


def test_report_links_every_figure_table_and_export(lab, tmp_path):
    preds = {s: _observed_labels(lab, s) for s in SITES}
    truth = {s: lab["labels"][s] for s in SITES}
    page = write_report(
        preds,
        tmp_path / "report",
        cubes=lab["cubes"],
        sites=lab["sites"],
        truth=truth,
        units="ha",
        progress=False,
    )
    links, html = _links(page)
    assert len(links) > 20
    for link in links:
        assert (page.parent / link).stat().st_size > 0, link
    for site in SITES:
        assert f'id="site-{site}"' in html
        assert f"figures/{site}-classes.png" in links
    assert "figures/summary.png" in links
    # a prediction equal to the truth wherever observed has no area error
    series = pd.read_parquet(page.parent / "tables" / "mining_vs_truth.parquet")
    assert set(series.site_id) == set(SITES)
    assert np.allclose(series.error_ha, 0)
    assert (series.truth_ha > 0).any()
    areas = pd.read_parquet(page.parent / "tables" / "class_areas.parquet")
    assert areas.attrs["units"] == "ha"
    assert (areas.unobserved_ha > 0).any()  # clouds are reported, not hidden
    by_climate = pd.read_csv(page.parent / "tables" / "expansion_by_climate.csv")
    assert set(by_climate.climate) == {"arid", "temperate", "tropical"}


def test_report_refuses_missing_or_empty_stores(tmp_path):
    import zarr

    with pytest.raises(FileNotFoundError, match="segment_to_zarr"):
        write_report(tmp_path / "nothing.zarr", tmp_path / "r")
    zarr.open_group(tmp_path / "empty.zarr", mode="w")
    with pytest.raises(StatsError, match="holds no predictions"):
        open_all_predictions(tmp_path / "empty.zarr")


def test_report_command_on_a_segmented_store(lab, world, tmp_path):
    from minecube.segment import segment_to_zarr
    from tests.test_segment import _model

    store = tmp_path / "predictions.zarr"
    for site in SITES[:2]:
        segment_to_zarr(lab["cubes"][site], _model(), store, progress=False)
    args = [
        "report",
        str(store),
        "--out",
        str(tmp_path / "report"),
        "--units",
        "km2",
        "--sites",
        str(world.path / "sites.geojson"),
        "--labels",
        str(world.path / "labels"),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    page = tmp_path / "report" / "index.html"
    assert f"report: {page.resolve()}" in result.output
    links, _html = _links(page)
    assert all((page.parent / link).is_file() for link in links)
    series = pd.read_csv(page.parent / "tables" / "mining_vs_truth.csv")
    assert set(series.site_id) == set(SITES[:2])
    assert "predicted_km2" in series.columns
    bad = CliRunner().invoke(main, ["report", str(store), "--labels", str(tmp_path)])
    assert bad.exit_code != 0
    assert "no label file for sites" in bad.output


HOSTILE = '<img src=x onerror="document.body.dataset.injected=1">'


def test_report_escapes_data_and_shows_its_images_in_a_browser(lab, browser, tmp_path):
    """Values from data (title, model, commodity, climate) are text, never markup or script;
    checked in headless Chromium, which also shows that every image loads."""
    preds = {s: _observed_labels(lab, s) for s in SITES[:2]}
    preds[SITES[0]].attrs["model_spec"] = f"fpn {HOSTILE}"
    sites = lab["sites"].copy()
    sites["commodity"] = sites["commodity"].where(sites.site_id != SITES[1], f"coal{HOSTILE}")
    page = write_report(
        preds, tmp_path / "report", sites=sites, progress=False,
        title="<script>document.body.dataset.injected=2</script> mines",
    )  # fmt: skip
    tab = browser.new_page()
    errors, requests = [], []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.on("dialog", lambda d: errors.append(f"dialog {d.message}"))
    tab.on("request", lambda r: requests.append(r.url))
    tab.goto(page.as_uri())
    tab.wait_for_load_state("load")
    images = tab.evaluate(
        "[...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
    )
    # site map, summary, class areas; per site its maps, its periods and its disturbance
    assert len(images) == 3 + 3 * len(preds)
    assert all(done and width > 100 for _src, done, width in images), images
    assert images[0][0] == "figures/sites.png"  # the report opens with the site map
    assert tab.evaluate("document.querySelector('#site-map img').naturalWidth") > 600
    folder = page.parent.resolve().as_uri()
    assert requests
    assert all(url.startswith(folder) for url in requests), requests  # offline
    assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert tab.evaluate("document.body.dataset.injected") is None, "script from data ran"
    assert tab.evaluate("document.querySelectorAll('script, [onerror]').length") == 0
    text = tab.evaluate("document.body.innerText")
    assert HOSTILE in text  # shown as the text it is
    assert tab.title() == "<script>document.body.dataset.injected=2</script> mines"
    assert errors == []
    tab.close()


@pytest.mark.parametrize("site", ["../../escape", "a/b", "pit#2", HOSTILE, "007 "])
def test_report_refuses_site_ids_that_are_not_safe_names(lab, site, tmp_path):
    from minecube.sites import SiteTableError

    pred = _observed_labels(lab, SITES[0])
    with pytest.raises(SiteTableError, match=r"is not allowed.*try"):
        write_report({site: pred}, tmp_path / "report", progress=False)
    assert not any(tmp_path.parent.glob("escape*"))


def test_site_map_draws_each_site_where_it_is_on_the_land_outline():
    """The site map's pixels: each site's marker in its commodity's colour at its lon/lat,
    land (Natural Earth's outline, shipped with minecube) at Ghana's interior, sea at the
    mid-Pacific."""
    import geopandas as gpd
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_rgb
    from shapely.geometry import Point

    from minecube.plot import site_map

    sites = gpd.GeoDataFrame(
        {"site_id": ["pit-a", "pit-b"], "commodity": ["gold", "coal"]},
        geometry=[Point(-60.0, -10.0).buffer(0.05), Point(135.0, -25.0).buffer(0.05)],
        crs="EPSG:4326",
    )
    fig = site_map(sites, label=False)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3] / 255
    ax = fig.axes[0]
    height = pixels.shape[0]

    def colour(lon, lat):
        x, y = ax.transData.transform((lon, lat))
        return pixels[round(height - y), round(x)]

    shown = ax.get_legend()
    legend = dict(zip([t.get_text() for t in shown.get_texts()], shown.legend_handles, strict=True))
    for site in sites.itertuples():
        want = to_rgb(legend[site.commodity].get_facecolor()[0])
        p = site.geometry.centroid
        np.testing.assert_allclose(colour(p.x, p.y), want, atol=0.02)
    np.testing.assert_allclose(colour(-1.0, 8.0), to_rgb("#e6e2d8"), atol=0.02)  # land
    np.testing.assert_allclose(colour(-150.0, 0.0), to_rgb("#f4f8fb"), atol=0.02)  # sea
