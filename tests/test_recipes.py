"""Every shipped recipe validates with the real CLI, offline (meta device, no weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sfsurgery.cli import main

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml"))


def test_recipes_are_shipped():
    names = {path.stem for path in RECIPES}
    assert {"custom_head", "ucf101_gray", "small_clips", "features", "rgbd", "r101_zoo"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=[path.stem for path in RECIPES])
def test_recipe_validates(path, monkeypatch):
    monkeypatch.setenv("SFSURGERY_OFFLINE", "1")
    data = yaml.safe_load(path.read_text())
    assert data["name"] == path.stem, "a recipe's name is its file name (its default output file)"
    assert not data["base"].get("pretrained") and "checkpoint" not in data["base"], "shipped recipes run offline"
    assert path.read_text().lstrip().startswith("#"), "shipped recipes open with a comment explaining them"
    assert data["expect"]["output"], "shipped recipes state their output shape"

    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    expected = ", ".join(map(str, data["expect"]["output"]))
    assert f"-> output ({expected})" in result.output
