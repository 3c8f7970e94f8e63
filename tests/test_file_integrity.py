"""The file's header is sealed and typed: edits, flips and hostile metadata are one FileFormatError.

Every file here is written by ``sfsurgery.apply(...).save(...)`` and then changed byte by byte
or re-assembled (``build``); ``sealed=True`` recomputes the header digest, so the checks behind
the digest are what must refuse it.
"""

from __future__ import annotations

import copy
import json
import struct
import warnings

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import r18_recipe

import sfsurgery
from sfsurgery.cli import main
from sfsurgery.errors import FileFormatError, VideoError
from sfsurgery.file.header import FILE_FORMAT, header_sha256, seal
from sfsurgery.file.reader import FileFormatWarning, read_file_header
from sfsurgery.predict import clip_spec, predict
from sfsurgery.testing import DEFAULT_BASE, DEFAULT_INPUT

OPS = [{"op": "swap_pool"}, {"op": "truncate", "after": "blocks.1"}, {"op": "replace_head", "num_classes": 5}]


def small_recipe() -> dict:
    recipe = r18_recipe(None, copy.deepcopy(OPS), input={"size": [64, 64], "frames": 8})
    return {**recipe, "base": copy.deepcopy(DEFAULT_BASE)}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    result = sfsurgery.apply(small_recipe())
    return result.save(tmp_path_factory.mktemp("integrity") / "model.safetensors"), result


def split(path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + length]), data[8 + length:]


def build(header: dict, data: bytes, *, sealed: bool = True) -> bytes:
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob = struct.pack("<Q", len(blob) + (-len(blob) % 8)) + blob + b" " * (-len(blob) % 8)
    return (seal(blob) if sealed else blob) + data


def as_format_1(header: dict) -> dict:
    """The old layout: no header digest, format 1 (the data digest stays)."""
    meta = {k: v for k, v in header["__metadata__"].items() if k != "sfsurgery.sha256"}
    return {**header, "__metadata__": {**meta, "sfsurgery.format": "1"}}


def edited(path, out, *, sealed: bool = True, format_1: bool = False, **changes: str):
    header, data = split(path)
    header = {**header, "__metadata__": {**header["__metadata__"], **changes}}
    out.write_bytes(build(as_format_1(header) if format_1 else header, data, sealed=sealed and not format_1))
    return out


def flipped(path, out, offset: int, mask: int = 1):
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    out.write_bytes(bytes(data))
    return out


def refused(path, match: str, *, verify: bool = True) -> FileFormatError:
    """load and inspect both refuse, with the same located message and a hint."""
    errors = []
    for read in (lambda: sfsurgery.load(path, verify=verify), lambda: sfsurgery.inspect_file(path, verify=verify)):
        with pytest.raises(FileFormatError, match=match) as info:
            read()
        assert info.value.hint, info.value.message
        errors.append(info.value.message)
    assert errors[0] == errors[1]
    return info.value


# --- finding 6: the header is covered by a digest ---------------------------------------------


def test_format_2_seals_header_and_data(saved):
    path, result = saved
    header, data = split(path)
    meta = header["__metadata__"]
    assert meta["sfsurgery.format"] == str(FILE_FORMAT) == "2"
    raw = path.read_bytes()
    assert header_sha256(raw[:len(raw) - len(data)]) == meta["sfsurgery.sha256"]
    info = sfsurgery.inspect_file(path)
    assert info["format"] == 2 and info["header_verified"] and info["data_verified"] and info["warnings"] == []
    typed = read_file_header(path)
    assert typed.verified and typed.recorded.params.total == sum(p.numel() for p in result.model.parameters())
    assert typed.tensors["blocks.2.proj.weight"].shape == [5, 352] and typed.recorded.input.frames == 8
    again = result.save(path.with_name("again.safetensors"))
    assert again.read_bytes() == raw  # still deterministic


def test_renamed_data_digest_and_flipped_data_are_refused(saved, tmp_path):
    path, _ = saved
    raw = path.read_bytes()
    out = flipped(path, tmp_path / "renamed.safetensors", raw.index(b"sfsurgery.data_sha256") + 20)  # ...sha257
    flipped(out, out, len(raw) - 100, 0x10)
    refused(out, "is corrupted: its header does not match")
    refused(out, r"damaged metadata \(unknown key 'sfsurgery.data_sha257'\)", verify=False)


@pytest.mark.parametrize("old, new", [(b'"activation":null', b'"activation":"sigmoid"'),
                                      (b'"kind":"avg"', b'"kind":"max"'), (b'"dropout":0.5', b'"dropout":0.9')])
def test_an_edited_recipe_is_refused(saved, tmp_path, old, new):
    path, _ = saved
    header, data = split(path)
    meta = header["__metadata__"]
    recipe = meta["sfsurgery.recipe"].encode()
    assert old in recipe
    meta = {**meta, "sfsurgery.recipe": recipe.replace(old, new).decode()}
    out = tmp_path / "edited.safetensors"
    out.write_bytes(build({**header, "__metadata__": meta}, data, sealed=False))
    refused(out, "is corrupted: its header does not match the sha256")
    run = CliRunner().invoke(main, ["inspect", str(out)])
    assert run.exit_code == 2 and "is corrupted" in run.stderr and "Traceback" not in run.output
    assert isinstance(sfsurgery.load(out, verify=False), torch.nn.Module)  # verify=False trusts the file


def test_a_flipped_tensor_name_is_refused_by_load_and_inspect_alike(saved, tmp_path):
    path, _ = saved
    at = path.read_bytes().index(b'"blocks.2.proj.weight"') + 8  # blocks.2 -> blocks.3
    out = flipped(path, tmp_path / "name.safetensors", at)
    refused(out, "is corrupted: its header does not match")
    refused(out, r"tensors do not fit the recorded recipe: 1 missing \(blocks.2.proj.weight\); "
                 r"1 unexpected \(blocks.3.proj.weight\)", verify=False)


def test_a_claimed_sfsurgery_file_without_a_digest_needs_verify_false(saved, tmp_path):
    path, result = saved
    header, data = split(path)
    meta = {k: v for k, v in header["__metadata__"].items() if k != "sfsurgery.sha256"}
    out = tmp_path / "unsealed.safetensors"
    out.write_bytes(build({**header, "__metadata__": meta}, data, sealed=False))
    refused(out, "no sfsurgery.sha256 over its header")
    model = sfsurgery.load(out, verify=False)
    assert all(torch.equal(v, result.model.state_dict()[k]) for k, v in model.state_dict().items())
    old = tmp_path / "old_without_digests.safetensors"
    meta = {k: v for k, v in meta.items() if k != "sfsurgery.data_sha256"}
    old.write_bytes(build(as_format_1({**header, "__metadata__": meta}), data, sealed=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FileFormatWarning)
        refused(old, "no sfsurgery.data_sha256 over its tensor data")
        assert isinstance(sfsurgery.load(old, verify=False), torch.nn.Module)


def test_a_format_1_file_loads_with_a_warning(saved, tmp_path):
    path, result = saved
    header, data = split(path)
    old = tmp_path / "format1.safetensors"
    old.write_bytes(build(as_format_1(header), data, sealed=False))
    with pytest.warns(FileFormatWarning, match="format 1: its header .* has no digest"):
        model = sfsurgery.load(old)
    assert all(torch.equal(v, result.model.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.warns(FileFormatWarning):
        info = sfsurgery.inspect_file(old)
    assert info["format"] == 1 and info["data_verified"] and not info["header_verified"]
    assert len(info["warnings"]) == 1 and "format 1" in info["warnings"][0]
    with pytest.warns(FileFormatWarning):
        run = CliRunner().invoke(main, ["inspect", str(old), "--json"])
    assert run.exit_code == 0 and "format 1" in json.loads(run.stdout)["warnings"][0]
    refused(flipped(old, tmp_path / "format1_flipped.safetensors", len(old.read_bytes()) - 7),
            "tensor data does not match")
    # a format digit changed to 1 does not switch the header digest off
    downgraded = tmp_path / "downgraded.safetensors"
    meta = {**header["__metadata__"], "sfsurgery.format": "1"}
    downgraded.write_bytes(build({**header, "__metadata__": meta}, data, sealed=False))
    refused(downgraded, "header does not match")


def test_bounded_reading(saved, tmp_path):
    path, _ = saved
    raw = path.read_bytes()
    huge = tmp_path / "huge_length.safetensors"
    huge.write_bytes(struct.pack("<Q", 2**60) + raw[8:])
    refused(huge, "header length field says 1152921504606846976 bytes")
    (tmp_path / "short.safetensors").write_bytes(b"\x01\x00")
    refused(tmp_path / "short.safetensors", "too short")
    header, data = split(path)
    (tmp_path / "data_missing.safetensors").write_bytes(build(header, data[:-4]))
    refused(tmp_path / "data_missing.safetensors", "the tensors take .* bytes but the file holds", verify=False)


# --- finding 7: hostile metadata is one FileFormatError, also unsealed and in format 1 ----------


def _metadata(saved) -> dict:
    return split(saved[0])[0]["__metadata__"]


def _json(meta: dict, key: str, **changes) -> str:
    return json.dumps({**json.loads(meta[key]), **changes})


HOSTILE = {
    "superscript format": ({"sfsurgery.format": "²"}, r"sfsurgery.format is '²'"),
    "ops not a list": ({"sfsurgery.recipe": lambda m: _json(m, "sfsurgery.recipe", ops=5)}, "sfsurgery.recipe.ops"),
    "lineage ops a number": ({"sfsurgery.lineage": lambda m: _json(m, "sfsurgery.lineage", ops=5)},
                             "sfsurgery.lineage.ops"),
    "op name a list": ({"sfsurgery.recipe": lambda m: _json(m, "sfsurgery.recipe", ops=[{"op": ["swap_pool"]}])},
                       r"sfsurgery.recipe.ops.0.op"),
    "hub a list": ({"sfsurgery.recipe": lambda m: _json(m, "sfsurgery.recipe", base={"hub": ["x"]})},
                   "sfsurgery.recipe.base.hub"),
    "plugins a list": ({"sfsurgery.versions": lambda m: _json(m, "sfsurgery.versions", plugins=["a"])},
                       "sfsurgery.versions.plugins"),
    "lineage a string": ({"sfsurgery.lineage": '"blocks"'}, "sfsurgery.lineage is not a JSON dict"),
    "lineage keys a string": ({"sfsurgery.lineage": lambda m: _json(m, "sfsurgery.lineage", ops=[
        {"index": 0, "op": "swap_pool", "added": "blocks.6.proj"}])}, "sfsurgery.lineage.ops.0.added"),
    "deep recipe": ({"sfsurgery.recipe": '{"base":' + "[" * 100_000 + "]" * 100_000 + "}"},
                    "sfsurgery.recipe is not valid JSON"),
    "params of another shape": ({"sfsurgery.params": '{"x":1}'}, "sfsurgery.params"),
    "giant frames": ({"sfsurgery.input": lambda m: _json(m, "sfsurgery.input", frames=10**9)},
                     "sfsurgery.input.frames"),
    "shape a string": ({"sfsurgery.output_shape": '"[1, 5]"'}, "sfsurgery.output_shape"),
    "unknown key": ({"sfsurgery.extra": "1"}, "unknown key 'sfsurgery.extra'"),
    "input of another recipe": ({"sfsurgery.input": lambda m: _json(m, "sfsurgery.input", size=[32, 32])},
                                r"sfsurgery.input is .* but the recorded recipe takes"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_metadata_is_refused_never_a_traceback(saved, tmp_path, case):
    changes, match = HOSTILE[case]
    meta = _metadata(saved)
    changes = {k: v(meta) if callable(v) else v for k, v in changes.items()}
    sealed = edited(saved[0], tmp_path / "sealed.safetensors", **changes)
    refused(sealed, match)
    refused(edited(saved[0], tmp_path / "unsealed.safetensors", sealed=False, **changes), match, verify=False)
    if "sfsurgery.format" not in changes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FileFormatWarning)
            refused(edited(saved[0], tmp_path / "old.safetensors", format_1=True, **changes), match)
    run = CliRunner().invoke(main, ["inspect", str(sealed)])
    assert run.exit_code == 2 and run.stderr.startswith("error: ") and "hint: " in run.stderr
    with pytest.raises(FileFormatError, match=match):
        predict(sealed, tmp_path / "no_video_needed.mp4")


def test_metadata_values_must_be_strings(saved, tmp_path):
    header, data = split(saved[0])
    header = {**header, "__metadata__": {**header["__metadata__"], "sfsurgery.params": {"total": 1}}}
    out = tmp_path / "object.safetensors"
    out.write_bytes(build(header, data))
    refused(out, "__metadata__ must map strings to strings", verify=False)


# --- predict: the clip is bounded by the model and the video, before decoding -----------------


def write_video(path, w: int, h: int, n: int):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            img = np.full((h, w, 3), 40 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _with_input(saved, out, **changes):
    """A sealed file whose recorded input (and recipe input, so they agree) has ``changes``."""
    meta = _metadata(saved)
    recipe = json.loads(meta["sfsurgery.recipe"])
    recipe["input"] = {**recipe["input"], **changes}
    return edited(saved[0], out, **{"sfsurgery.input": _json(meta, "sfsurgery.input", **changes),
                                    "sfsurgery.recipe": json.dumps(recipe)})


def test_predict_bounds_the_clip_before_decoding(saved, tmp_path):
    small = write_video(tmp_path / "small.mp4", 64, 48, 4)
    result = predict(saved[0], small, topk=3)
    assert len(result["topk"]) == 3 and clip_spec(saved[0])["size"] == tuple(DEFAULT_INPUT["size"])
    wide = _with_input(saved, tmp_path / "wide.safetensors", size=[60000, 60000])
    assert sfsurgery.inspect_file(wide)["input"]["size"] == [60000, 60000]  # a valid file...
    for call in (lambda: clip_spec(wide), lambda: predict(wide, tmp_path / "missing.mp4")):
        with pytest.raises(VideoError, match=r"the model's clip \(3x8x60000x60000\) needs about 643.7 GiB"):
            call()  # ...whose clip predict refuses before looking for the video
    long = _with_input(saved, tmp_path / "long.safetensors", frames=1024)
    big = write_video(tmp_path / "big.mp4", 1920, 1080, 2)
    # decoding streams and crops each frame as it arrives: a long clip of 1080p frames fits
    assert predict(long, big)["windows"] == 1
