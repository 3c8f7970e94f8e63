"""Recipes as written: the schema (:mod:`.schema`), safe YAML and ``--set`` (:mod:`.reading`),
and readable validation messages (:mod:`.messages`).

A recipe document knows nothing of plugins; :func:`sfsurgery.resolve.resolve` turns it into
the typed :class:`~sfsurgery.resolve.Recipe` that the rest of the pipeline takes.
"""

from .messages import format_validation_error
from .reading import apply_overrides, parse_set, read_recipe_file
from .schema import DTYPES, RECIPE_VERSION, InputSpec, Preprocess, RecipeDocument

__all__ = ["DTYPES", "RECIPE_VERSION", "InputSpec", "Preprocess", "RecipeDocument", "apply_overrides",
           "format_validation_error", "parse_set", "read_recipe_file"]
