"""The ``sfsurgery`` command. It only formats what the library returns.

:mod:`.program` holds the group and its error and signal handling; each other module adds the
commands of one kind (:mod:`.recipes`, :mod:`.files`, :mod:`.listings`).
"""

from . import corpus, files, listings, recipes  # noqa: F401  (they register their commands on main)
from .program import main

__all__ = ["main"]
