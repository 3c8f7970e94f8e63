"""The file header as typed data: the safetensors tensor index and sfsurgery's metadata.

Everything read from a file is checked here once; any deviation is one FileFormatError with a
hint, never a traceback. Format 2 seals the header: ``sfsurgery.sha256`` is the sha256 of the
first 8 + N bytes (length field and JSON header, padding included) with its own 64 hex digits
written as zeros; ``sfsurgery.data_sha256`` (inside that header) is the sha256 of the rest.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, Json, NonNegativeInt

from ..errors import FileFormatError
from ..recipe import InputSpec, Preprocess
from .dtypes import DTYPE_CODES

#: The file format's own version (the recipe's ``sfsurgery: 1`` is versioned separately).
FILE_FORMAT = 2
HEADER_DIGEST_KEY = "sfsurgery.sha256"
DATA_DIGEST_KEY = "sfsurgery.data_sha256"
#: safetensors' own cap on the JSON header; checked before anything is allocated.
MAX_HEADER_BYTES = 100_000_000
ITEMSIZE = {code: dtype.itemsize for dtype, code in DTYPE_CODES.items()}
FLOAT_CODES = frozenset(code for dtype, code in DTYPE_CODES.items() if dtype.is_floating_point)
KNOWN_KEYS = frozenset({"sfsurgery.format", "sfsurgery.recipe", "sfsurgery.input", "sfsurgery.output_shape",
                        "sfsurgery.source", "sfsurgery.lineage", "sfsurgery.params", "sfsurgery.versions",
                        "sfsurgery.preprocess", "sfsurgery.labels", "sfsurgery.training",
                        HEADER_DIGEST_KEY, DATA_DIGEST_KEY})
# Inside a JSON string every '"' is escaped, so '"' after '{' or ',' is structural: this finds the key.
_DIGEST_FIELD = re.compile(rb'[{,][ \t\n\r]*"' + re.escape(HEADER_DIGEST_KEY.encode())
                           + rb'"[ \t\n\r]*:[ \t\n\r]*"([0-9a-f]{64})"')
REWRITE = "write the file again with sfsurgery apply"


def unreadable(name: str, why: str) -> FileFormatError:
    return FileFormatError(f"{name}: not a readable safetensors file ({why})",
                           hint="the file may be truncated or corrupted; write it again")


def damaged(name: str, what: str) -> FileFormatError:
    return FileFormatError(f"{name}: damaged metadata ({what})", hint=REWRITE)


def _digest_span(blob: bytes) -> tuple[int, int] | None:
    found = list(_DIGEST_FIELD.finditer(blob))
    return found[0].span(1) if len(found) == 1 else None


def header_sha256(blob: bytes) -> str | None:
    """The format-2 header digest of ``blob`` (length field + header); None without one digest field."""
    span = _digest_span(blob)
    if span is None:
        return None
    return hashlib.sha256(blob[:span[0]] + b"0" * 64 + blob[span[1]:]).hexdigest()


def seal(blob: bytes) -> bytes:
    """``blob`` (length field + header) with its header digest written in."""
    span = _digest_span(blob)
    if span is None:
        raise ValueError(f"the header needs exactly one {HEADER_DIGEST_KEY} field")
    return blob[:span[0]] + header_sha256(blob).encode() + blob[span[1]:]


class _Typed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TensorEntry(_Typed):
    """One tensor in the safetensors index."""

    dtype: str
    shape: list[NonNegativeInt] = Field(max_length=16)
    data_offsets: list[NonNegativeInt] = Field(min_length=2, max_length=2)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * ITEMSIZE[self.dtype]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)[:100]!r}")
    return dict(pairs)


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def parse_index(raw: bytes, data_bytes: int, name: str) -> tuple[dict[str, str], dict[str, TensorEntry]]:
    """The ``__metadata__`` and tensor index of a header; the tensors must tile the data exactly."""
    if not raw.startswith(b"{"):
        raise unreadable(name, "the header is not a JSON object")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise unreadable(name, f"the header is not valid JSON: {str(exc)[:200]}") from None
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise unreadable(name, "__metadata__ must map strings to strings")
    tensors: dict[str, TensorEntry] = {}
    for key, value in header.items():
        try:
            tensors[key] = entry = TensorEntry.model_validate(value)
        except pydantic.ValidationError as exc:
            raise unreadable(name, f"tensor {key[:100]!r}: {_first_error(exc)}") from None
        if entry.dtype not in ITEMSIZE:
            raise unreadable(name, f"tensor {key[:100]!r} has dtype {entry.dtype[:20]!r}, which sfsurgery never writes")
    end = 0
    for key, entry in sorted(tensors.items(), key=lambda item: item[1].data_offsets):
        begin, stop = entry.data_offsets
        if begin != end or stop - begin != entry.nbytes:
            raise unreadable(name, f"tensor {key[:100]!r} has offsets {list(entry.data_offsets)}; expected "
                                   f"[{end}, {end + entry.nbytes}] for shape {entry.shape}")
        end = stop
    if end != data_bytes:
        raise unreadable(name, f"the tensors take {end} bytes but the file holds {data_bytes} after its header")
    return metadata, tensors


def file_format(metadata: dict[str, str], name: str) -> int:
    """The sfsurgery file format a header declares; refuses files that are not (readable) sfsurgery files."""
    if not any(key.startswith("sfsurgery.") for key in metadata):
        raise FileFormatError(f"{name} has no sfsurgery metadata",
                              hint="only files written by sfsurgery apply can be rebuilt")
    version = metadata.get("sfsurgery.format")
    if version is None:
        raise damaged(name, "sfsurgery.format is missing")
    if not (version.isascii() and version.isdecimal()) or len(version) > 6 or int(version) < 1:
        raise damaged(name, f"sfsurgery.format is {version[:20]!r}")
    if int(version) > FILE_FORMAT:
        raise FileFormatError(f"{name} uses sfsurgery file format {version}; this sfsurgery reads formats "
                              f"1 to {FILE_FORMAT}", hint="upgrade sfsurgery")
    return int(version)


# --- sfsurgery's metadata ------------------------------------------------------------------------

Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Keys = list[str]


class Provider(_Typed):
    plugin: str
    distribution: str | None = None
    version: str | None = None


class LineageEntry(_Typed):
    index: NonNegativeInt
    op: str
    provider: Provider | None = None
    added: Keys = []
    removed: Keys = []
    transformed: Keys = []
    notes: list[str] = []


class Source(_Typed):
    base: dict[str, Any]
    weights: str
    seed: NonNegativeInt | None = None
    file: str | None = None
    sha256: str | None = None


class Lineage(_Typed):
    source: Source
    ops: list[LineageEntry]


class Params(_Typed):
    total: NonNegativeInt
    trainable: NonNegativeInt


class Versions(_Typed):
    sfsurgery: str
    torch: str
    pytorchvideo: str
    plugins: dict[str, str | None] = {}


class RecordedBase(_Typed):
    """What the writer records: a registered base or ``create_slowfast`` arguments, never paths."""

    hub: str | None = None
    create_slowfast: dict[str, Any] | None = None

    @pydantic.model_validator(mode="after")
    def _one(self) -> RecordedBase:
        if (self.hub is None) == (self.create_slowfast is None):
            raise ValueError("needs exactly one of hub or create_slowfast")
        return self


class RecordedOp(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    op: str


class RecordedRecipe(_Typed):
    """The recipe's shape; :func:`sfsurgery.load_recipe` checks its values."""

    sfsurgery: int = 1
    name: str = "model"
    seed: int = 0
    base: RecordedBase
    input: dict[str, Any] = {}
    ops: list[RecordedOp] = Field([], max_length=1000)
    expect: dict[str, Any] = {}
    save: dict[str, Any] = {}


class RecordedInput(InputSpec):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RecordedPreprocess(Preprocess):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)  # JSON lists fill the tuples


class StageCount(_Typed):
    path: str
    params: NonNegativeInt
    trainable: NonNegativeInt


class Training(_Typed):
    """What ``freeze`` and ``lr_mult`` left: trainable counts per stage, the lr rules, frozen BatchNorms."""

    stages: list[StageCount] = Field([], max_length=1000)
    lr_rules: list[tuple[str, float]] = Field([], max_length=1000)
    frozen_batchnorms: NonNegativeInt = 0


class Recorded(BaseModel):
    """sfsurgery's ``__metadata__``, each value parsed from its JSON once."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    file_format: str = Field(alias="sfsurgery.format")
    recipe: Json[RecordedRecipe] = Field(alias="sfsurgery.recipe")
    input: Json[RecordedInput] = Field(alias="sfsurgery.input")
    output_shape: Json[list[NonNegativeInt] | list[list[NonNegativeInt]]] = Field(alias="sfsurgery.output_shape")
    source: Json[Source] = Field(alias="sfsurgery.source")
    lineage: Json[Lineage] = Field(alias="sfsurgery.lineage")
    params: Json[Params] = Field(alias="sfsurgery.params")
    versions: Json[Versions] = Field(alias="sfsurgery.versions")
    preprocess: Json[RecordedPreprocess] | None = Field(None, alias="sfsurgery.preprocess")
    labels: Json[list[Annotated[str, Field(max_length=500)]]] | None = Field(None, alias="sfsurgery.labels")
    training: Json[Training] | None = Field(None, alias="sfsurgery.training")
    data_sha256: Hex64 | None = Field(None, alias=DATA_DIGEST_KEY)
    sha256: Hex64 | None = Field(None, alias=HEADER_DIGEST_KEY)


def parse_metadata(metadata: dict[str, str], name: str) -> Recorded:
    """The typed metadata of an sfsurgery file."""
    unknown = sorted(k for k in metadata if k.startswith("sfsurgery.") and k not in KNOWN_KEYS)
    if unknown:
        raise damaged(name, f"unknown key {unknown[0][:100]!r}")
    try:
        return Recorded.model_validate(metadata)
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "missing" and len(error["loc"]) == 1:
            raise damaged(name, f"{error['loc'][0]} is missing") from None
        raise damaged(name, _first_error(exc)) from None


def _first_error(exc: pydantic.ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part)[:100] for part in error["loc"])
    if len(error["loc"]) == 1 and error["type"] in ("dict_type", "model_type", "list_type"):
        return f"{where} is not a JSON {'list' if error['type'] == 'list_type' else 'dict'}"
    if len(error["loc"]) == 1 and error["type"] == "json_invalid":
        return f"{where} is not valid JSON ({error['msg'].removeprefix('Invalid JSON: ')[:200]})"
    return f"{where}: {error['msg'][:200]}" if where else error["msg"][:200]
