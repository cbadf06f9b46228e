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


def test_demo_run_prints_the_items_found_for_each_site(world):
    result = CliRunner().invoke(main, ["demo", "run", "--path", str(world.path)])
    assert result.exit_code == 0, result.output
    for site_id in world.site_ids:
        assert f"{site_id} (" in result.output
    ids = [i["id"] for i in world.items()]
    assert all(i in result.output for i in ids)
    assert f"{len(ids)} items found for {len(world.site_ids)} sites" in result.output


def test_bad_input_is_reported_not_raised(tmp_path):
    result = CliRunner().invoke(
        main, ["demo", "generate", str(tmp_path / "w"), "--tile-size", "99"]
    )
    assert result.exit_code != 0
    assert "must be even" in result.output
    result = CliRunner().invoke(main, ["demo", "generate", str(tmp_path / "w"), "--years", "x"])
    assert result.exit_code != 0
    assert "not a comma-separated list of years" in result.output
