"""Properties of the file format (hypothesis): any changed byte is caught, load and inspect agree,
and the writer gives deterministic bytes that safetensors reads back exactly."""

from __future__ import annotations

import hashlib
import struct
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file
from test_file_integrity import small_recipe

import sfsurgery
from sfsurgery.errors import FileFormatError
from sfsurgery.file.dtypes import DTYPE_CODES
from sfsurgery.file.header import DATA_DIGEST_KEY, HEADER_DIGEST_KEY, header_sha256
from sfsurgery.file.writer import write_safetensors

FEW = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("properties")
    path = sfsurgery.apply(small_recipe()).save(folder / "model.safetensors")
    raw = path.read_bytes()
    return raw, 8 + struct.unpack("<Q", raw[:8])[0], folder / "changed.safetensors"


def _outcome(read) -> str:
    """"ok", or the FileFormatError's message; any other exception fails the test."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a changed format digit may make it format 1
            read()
    except FileFormatError as exc:
        assert exc.hint, exc.message
        return exc.message
    return "ok"


def _changes(saved):
    raw, header_end, _ = saved
    header, data = st.integers(0, header_end - 1), st.integers(header_end, len(raw) - 1)
    return st.tuples(st.one_of(header, header, header, data), st.integers(1, 255))  # mostly the header


def _change(saved, offset: int, mask: int) -> Path:
    raw, _, out = saved
    changed = bytearray(raw)
    changed[offset] ^= mask
    out.write_bytes(bytes(changed))
    return out


def test_any_changed_byte_is_refused_by_load_and_inspect(saved):
    @FEW
    @given(_changes(saved))
    def check(change):
        path = _change(saved, *change)
        loaded, inspected = _outcome(lambda: sfsurgery.load(path)), _outcome(lambda: sfsurgery.inspect_file(path))
        assert loaded == inspected != "ok"

    check()


def test_without_verification_load_and_inspect_still_agree(saved):
    @settings(FEW, max_examples=30)  # most of these rebuild the model on meta
    @given(_changes(saved))
    def check(change):
        path = _change(saved, *change)
        loaded = _outcome(lambda: sfsurgery.load(path, verify=False))
        inspected = _outcome(lambda: sfsurgery.inspect_file(path, verify=False))
        assert loaded == inspected

    check()


NAMES = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12).filter(
    lambda name: name != "__metadata__")


@st.composite
def tensors(draw):
    names = draw(st.lists(NAMES, min_size=0, max_size=6, unique=True))
    out = {}
    for i, name in enumerate(names):
        dtype = draw(st.sampled_from(sorted(DTYPE_CODES, key=str)))
        shape = draw(st.lists(st.integers(0, 5), max_size=3))
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**32)) + i)
        if dtype.is_floating_point:
            out[name] = (torch.randn(shape, generator=g, dtype=torch.float64) * 100).to(dtype)
        elif dtype == torch.bool:
            out[name] = torch.randint(0, 2, shape, generator=g).bool()
        else:
            info = torch.iinfo(dtype)
            out[name] = torch.randint(info.min, info.max, shape, generator=g, dtype=dtype)
    return out


METADATA = st.dictionaries(NAMES.filter(lambda k: not k.startswith("sfsurgery.")), st.text(max_size=20), max_size=4)


@FEW
@given(tensors(), METADATA, st.sampled_from([None, torch.float16, torch.bfloat16]))
def test_the_writer_is_deterministic_and_safetensors_reads_it(state, metadata, dtype):
    with tempfile.TemporaryDirectory() as folder:
        a = write_safetensors(Path(folder) / "a.safetensors", state, metadata, dtype=dtype)
        b = write_safetensors(Path(folder) / "b.safetensors", dict(reversed(state.items())), metadata, dtype=dtype)
        raw = a.read_bytes()
        assert raw == b.read_bytes()
        loaded = load_file(a)
        assert loaded.keys() == state.keys()
        for name, tensor in state.items():
            expected = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
            assert loaded[name].dtype == expected.dtype and torch.equal(loaded[name], expected), name
        with safe_open(str(a), framework="pt") as f:
            written = f.metadata()
        assert {k: v for k, v in written.items() if not k.startswith("sfsurgery.")} == metadata
        header_end = 8 + struct.unpack("<Q", raw[:8])[0]
        assert header_sha256(raw[:header_end]) == written[HEADER_DIGEST_KEY]
        assert hashlib.sha256(raw[header_end:]).hexdigest() == written[DATA_DIGEST_KEY]
