"""The minecube command line, run in-process with click's runner."""

from __future__ import annotations

from click.testing import CliRunner

from minecube.cli import main


def test_help_shows_examples():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "minecube demo run" in result.output
    for command in ("generate", "serve", "run"):
        sub = CliRunner().invoke(main, ["demo", command, "--help"])
        assert sub.exit_code == 0, sub.output
        assert "Example" in sub.output


def test_demo_run_searches_every_site_and_stores_a_cube_each(world, tmp_path):
    out = tmp_path / "out"
    args = ["demo", "run", "--path", str(world.path), "--out", str(out), "--composite", "year"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    for site_id in world.site_ids:
        assert f"{site_id} (" in result.output
        assert (out / "quicklook" / f"{site_id}.png").stat().st_size > 10_000
    ids = [i["id"] for i in world.items()]
    assert all(i in result.output for i in ids)
    assert f"{len(ids)} items found for {len(world.site_ids)} sites" in result.output
    summary = result.output.split("time\n")[-1].splitlines()[: len(world.site_ids)]
    years = len(world.spec.years)
    assert [line.split()[:3] for line in summary] == [
        [sid, str(years), str(years)] for sid in world.site_ids
    ]
    # re-running reuses the cubes: nothing new to write
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    rerun = again.output.split("time\n")[-1].splitlines()[: len(world.site_ids)]
    assert all(line.split()[2] == "0" for line in rerun)


def test_bad_input_is_reported_not_raised(tmp_path):
    result = CliRunner().invoke(
        main, ["demo", "generate", str(tmp_path / "w"), "--tile-size", "99"]
    )
    assert result.exit_code != 0
    assert "must be even" in result.output
    result = CliRunner().invoke(main, ["demo", "generate", str(tmp_path / "w"), "--years", "x"])
    assert result.exit_code != 0
    assert "not a comma-separated list of years" in result.output
