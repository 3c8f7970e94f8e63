"""What a file carries for deployment: class names and the preprocessing contract.

Both come from the recipe (``save.labels``, ``preprocess:``) and the base's model-zoo defaults,
are checked before any work, and are stored in the file, so ``predict``, ``extract`` and
:func:`sfsurgery.transform` need nothing but the file.
"""

from __future__ import annotations

from pathlib import Path

from .errors import Location, RecipeError
from .recipe import InputSpec, Preprocess
from .recipe.schema import MAX_DIM, PreprocessConfig

MAX_LABEL_BYTES = 4 << 20
#: The model zoo's ratio of short side to crop (256 / 224), used when the crop changes without ``side``.
SIDE_PER_CROP = 256 / 224


def resolve_preprocess(default: Preprocess, config: PreprocessConfig, clip: InputSpec,
                       size_changed: bool) -> Preprocess:
    """The base's preprocessing with the recipe's fields on top.

    When the recipe changes ``input.size`` but not ``side``, ``side`` follows the crop
    (``round(crop × 256 / 224)``); a ``side`` below the crop is an error.
    """
    given = config.model_dump(exclude_none=True)
    crop = max(clip.size)
    if size_changed and "side" not in given:
        given["side"] = min(MAX_DIM, round(crop * SIDE_PER_CROP))
    try:
        merged = Preprocess(**{**default.model_dump(), **given})
    except ValueError as exc:  # the base's own values can be off (a plugin's)
        raise RecipeError(f"preprocess is not valid: {str(exc).splitlines()[-1][:200]}",
                          hint="set preprocess: in the recipe", where=Location(field="preprocess")) from None
    if merged.side < crop:
        raise RecipeError(f"side {merged.side} is smaller than the {crop}-pixel crop (input.size {list(clip.size)})",
                          hint=f"use side >= {crop}, e.g. {round(crop * SIDE_PER_CROP)}",
                          where=Location(field="preprocess.side"))
    if len(merged.mean) != len(merged.std):
        raise RecipeError(f"mean has {len(merged.mean)} values and std {len(merged.std)}",
                          hint="give one value per channel to both", where=Location(field="preprocess"))
    return merged


def check_channels(preprocess: Preprocess, channels: int, given: bool) -> None:
    """mean/std the recipe gives: one value per channel, one for all, or RGB values for a gray model.

    The base's defaults are RGB values; a model adapted to other channels (RGB-D) keeps them until
    the recipe says otherwise (``transform`` then refuses to normalise such clips).
    """
    count = len(preprocess.mean)
    if given and count not in (1, channels) and not (channels == 1 and count == 3):
        raise RecipeError(f"preprocess has {count} mean/std values but the model takes {channels} channels",
                          hint=f"give {channels} values (or one for all)", where=Location(field="preprocess.mean"))


def read_labels(value: list[str] | str | None, root: Path) -> tuple[str, ...] | None:
    """``save.labels``: a list, or a UTF-8 text file (relative to the recipe) with one label per line."""
    if value is None:
        return None
    if isinstance(value, list):
        return tuple(value)
    path = (root / value).resolve()
    where = Location(field="save.labels")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_LABEL_BYTES + 1)
    except (OSError, ValueError) as exc:
        raise RecipeError(f"cannot read labels file {value[:200]}: {getattr(exc, 'strerror', None) or exc}",
                          hint="save.labels is a list or a text file relative to the recipe", where=where) from None
    if len(raw) > MAX_LABEL_BYTES:
        raise RecipeError(f"labels file {path.name} is larger than 4 MiB", hint="one class name per line",
                          where=where)
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise RecipeError(f"labels file {path.name} is not UTF-8 text", hint="one class name per line",
                          where=where) from None
    while lines and not lines[-1].strip():
        lines.pop()
    return tuple(line.strip() for line in lines)


def check_labels(labels: tuple[str, ...] | None, outputs: list[tuple[int, ...]]) -> None:
    """One label per output class: the model must end in a (batch, classes) output of that width."""
    if labels is None:
        return
    where = Location(field="save.labels")
    if len(outputs) != 1 or len(outputs[0]) != 2:
        raise RecipeError(f"{len(labels)} labels given, but the model outputs {outputs}, not (batch, classes) scores",
                          hint="labels name a classifier's outputs: end the recipe in replace_head", where=where)
    if outputs[0][1] != len(labels):
        raise RecipeError(f"{len(labels)} labels for a head of {outputs[0][1]} classes",
                          hint="give one label per class, in class order", where=where)
