"""pack_pathways, the clip transforms, decode_clip and predict (library and CLI)."""

from __future__ import annotations

import json
import math

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import sfsurgery
from sfsurgery.cli import main
from sfsurgery.predict import head_activation, predict
from sfsurgery.video import (
    VideoError,
    center_crop,
    decode_clip,
    normalize,
    pack_pathways,
    preprocess,
    short_side_scale,
    to_float,
)

# --- the seed's transforms, as pytorchvideo 0.1.5 and its tutorial write them ------------------
# (pytorchvideo.transforms does not import with current torchvision, so they are copied here)


def ref_uniform_temporal_subsample(x: torch.Tensor, num_samples: int, temporal_dim: int = -3) -> torch.Tensor:
    """pytorchvideo/transforms/functional.py: uniform_temporal_subsample."""
    t = x.shape[temporal_dim]
    assert num_samples > 0 and t > 0
    indices = torch.linspace(0, t - 1, num_samples)
    indices = torch.clamp(indices, 0, t - 1).long()
    return torch.index_select(x, temporal_dim, indices)


def ref_pack_pathway(frames: torch.Tensor, alpha: int) -> list[torch.Tensor]:
    """The tutorial's PackPathway, for one (C, T, H, W) clip."""
    fast_pathway = frames
    slow_pathway = torch.index_select(
        frames, 1, torch.linspace(0, frames.shape[1] - 1, frames.shape[1] // alpha).long())
    return [slow_pathway, fast_pathway]


def ref_sf_data_ready(vdat: torch.Tensor, num_frames: int, alpha: int) -> list[torch.Tensor]:
    """The seed's batch loop: per sample subsample + PackPathway, [None], torch.cat."""
    s2 = [[], []]
    for i in range(vdat.shape[0]):
        f = ref_pack_pathway(ref_uniform_temporal_subsample(vdat[i], num_frames), alpha)
        f = [_[None, ...] for _ in f]
        s2[0].append(f[0])
        s2[1].append(f[1])
    return [torch.cat(s2[0]), torch.cat(s2[1])]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


# --- pack_pathways -------------------------------------------------------------------------------


@pytest.mark.parametrize("t, frames, alpha", [(64, 32, 4), (32, None, 4), (40, 8, 4), (17, 16, 8), (5, 12, 2),
                                              (30, 30, 3), (24, 8, 1)])
def test_pack_equals_tutorial_per_clip_and_batch(t, frames, alpha):
    clips = torch.randn(3, 3, t, 5, 6, generator=torch.Generator().manual_seed(t))
    batch = pack_pathways(clips, alpha=alpha, frames=frames)
    assert same(batch, ref_sf_data_ready(clips, frames or t, alpha))
    for i in range(clips.shape[0]):
        one = pack_pathways(clips[i], alpha=alpha, frames=frames)  # unbatched in, unbatched out
        assert [p.dim() for p in one] == [4, 4]
        assert same(one, ref_pack_pathway(ref_uniform_temporal_subsample(clips[i], frames or t), alpha))
        assert same(one, [batch[0][i], batch[1][i]])


def test_pack_shapes_and_no_copy_without_subsampling():
    clips = torch.rand(2, 3, 32, 8, 8)
    slow, fast = pack_pathways(clips)
    assert fast is clips and slow.shape == (2, 3, 8, 8, 8)
    slow, fast = pack_pathways(clips[0], alpha=8, frames=16)
    assert slow.shape == (3, 2, 8, 8) and fast.shape == (3, 16, 8, 8)


def test_pack_keeps_device_and_dtype():
    devices = ["cpu", "meta"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        clips = torch.ones(2, 3, 16, 4, 4, dtype=torch.float16, device=device)
        for p in pack_pathways(clips, alpha=4, frames=8) + pack_pathways(clips[0], alpha=4):
            assert p.device.type == torch.device(device).type and p.dtype == torch.float16


@pytest.mark.parametrize("t, frames, alpha", [(10, None, 4), (64, 30, 4), (32, 3, 4), (9, None, 2)])
def test_pack_refuses_frames_not_divisible_by_alpha(t, frames, alpha):
    with pytest.raises(VideoError) as info:
        pack_pathways(torch.rand(1, 3, t, 4, 4), alpha=alpha, frames=frames)
    assert isinstance(info.value, ValueError) and info.value.exit_code == 2
    fast_t = frames or t
    assert f"ceil({fast_t}/{alpha})" in info.value.message
    assert "divisible by alpha" in info.value.hint


@pytest.mark.parametrize("bad, kwargs", [(torch.rand(3, 4, 4), {}), (torch.rand(1, 1, 3, 4, 4, 4), {}),
                                         ([torch.rand(3, 8, 4, 4)], {}), (torch.rand(3, 8, 4, 4), {"alpha": 0}),
                                         (torch.rand(3, 8, 4, 4), {"frames": 0})])
def test_pack_rejects_bad_arguments(bad, kwargs):
    with pytest.raises(VideoError):
        pack_pathways(bad, **kwargs)


# --- transforms ----------------------------------------------------------------------------------


def test_transforms_match_pytorchvideo_rules():
    frames = torch.randint(0, 256, (4, 30, 40, 3), dtype=torch.uint8)
    clip = to_float(frames.permute(3, 0, 1, 2))
    assert clip.dtype == torch.float32 and torch.equal(clip * 255, frames.permute(3, 0, 1, 2).float())
    scaled = short_side_scale(clip, 15)  # short side 30 -> 15, long floor(40/30*15) = 20
    expected = torch.nn.functional.interpolate(clip, size=(15, 20), mode="bilinear", align_corners=False)
    assert torch.equal(scaled, expected)
    tall = short_side_scale(clip.transpose(-1, -2), 15)
    assert tall.shape[-2:] == (20, 15)
    assert torch.equal(short_side_scale(clip[None], 15)[0], scaled)  # batched
    crop = center_crop(scaled, 12)  # offsets round((15-12)/2)=2 (banker's), round(8/2)=4
    assert torch.equal(crop, scaled[..., 2:14, 4:16])
    assert torch.equal(normalize(crop), (crop - 0.45) / 0.225)
    gray = preprocess(frames, 12, channels=1)
    assert gray.shape == (1, 4, 12, 12)
    with pytest.raises(VideoError, match="2-channel"):
        preprocess(frames, 12, channels=2)
    with pytest.raises(VideoError, match="crop"):
        center_crop(scaled, 16)


def test_preprocess_covers_non_square_sizes():
    frames = torch.randint(0, 256, (5, 96, 128, 3), dtype=torch.uint8)
    for size in [(64, 64), (48, 120), (96, 40), (33, 127)]:
        assert preprocess(frames, size, num_frames=8).shape == (3, 8, *size)


# --- videos --------------------------------------------------------------------------------------


def write_video(path, n: int = 40, h: int = 96, w: int = 128, seed: int = 0):
    """A moving colour gradient with some noise, mpeg4 in an mp4, yuv420p."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            img = np.stack([(x * 2 + i * 5) % 256, (y * 2 + i * 3) % 256, (x + y + i * 7) % 256], -1)
            img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def all_frames(path) -> torch.Tensor:
    with av.open(str(path)) as container:
        return torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4")


def small_recipe(**head) -> dict:
    return {"name": "tiny", "base": {"create_slowfast": {"model_depth": 18}},
            "input": {"frames": 8, "size": [64, 64]},
            "ops": [{"op": "swap_pool"}, {"op": "replace_head", "num_classes": 5, **head}]}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return sfsurgery.apply(small_recipe()).save(tmp_path_factory.mktemp("model") / "m.safetensors")


def test_decode_clip_samples_uniformly(video, tmp_path):
    every = all_frames(video)
    assert every.shape == (40, 96, 128, 3) and every.dtype == torch.uint8
    for frames in (8, 40, 57, 1):
        assert torch.equal(decode_clip(video, frames), ref_uniform_temporal_subsample(every, frames, 0))
    short = write_video(tmp_path / "one.mp4", n=1)
    assert torch.equal(decode_clip(short, 4), all_frames(short).expand(4, -1, -1, -1))
    uncounted = write_video(tmp_path / "clip.ts", n=23)  # MPEG-TS records no frame count: two passes
    assert torch.equal(decode_clip(uncounted, 8), ref_uniform_temporal_subsample(all_frames(uncounted), 8, 0))


def test_decode_clip_errors(tmp_path):
    with pytest.raises(VideoError, match="no such video"):
        decode_clip(tmp_path / "missing.mp4", 8)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(VideoError, match="not a video"):
        decode_clip(text, 8)
    with av.open(str(tmp_path / "silence.wav"), "w") as container:  # a real container, no video stream
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
    with pytest.raises(VideoError, match="no video stream"):
        decode_clip(tmp_path / "silence.wav", 8)


# --- predict -------------------------------------------------------------------------------------


def window_clips(video, frames=8, sampling_rate=2, channels=3) -> list[torch.Tensor]:
    """The windows written out: every frame decoded, window k = frames [16k, 16k + 16), subsampled by
    pytorchvideo's rule, /255, short side scaled to 73 (= round(64 x 256 / 224)), center crop 64, normalised."""
    every = all_frames(video)
    span = frames * sampling_rate
    clips = []
    for first in range(0, every.shape[0] - span + 1, span):
        picked = every[first:first + span][torch.linspace(0, span - 1, frames).long()]
        clip = picked.permute(3, 0, 1, 2).float() / 255.0
        if channels == 1:
            clip = clip.mean(0, keepdim=True)
        clip = torch.nn.functional.interpolate(clip, size=(73, 97), mode="bilinear", align_corners=False)  # 96x128
        clips.append((clip[..., 4:68, 16:80] - 0.45) / 0.225)  # center: round(9/2) = 4, round(33/2) = 16
    return clips


def by_hand(model, video, channels=3, activation=lambda x: x.softmax(0)) -> torch.Tensor:
    """Scores averaged over the windows (multi-view testing), each window packed as the tutorial does."""
    scores = []
    for clip in window_clips(video, channels=channels):
        slow, fast = ref_pack_pathway(clip, 4)
        with torch.no_grad():
            scores.append(activation(model([slow[None], fast[None]])[0]))
    return torch.stack(scores).mean(0)


def test_predict_matches_the_model_run_by_hand(model_file, video):
    result = predict(model_file, video, topk=5)
    assert set(result) == {"file", "video", "windows", "topk"} and result["file"] == str(model_file)
    assert result["windows"] == 2  # 40 frames, clips of 8 x sampling rate 2: [0, 16) and [16, 32)
    scores = [e["score"] for e in result["topk"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    assert sorted(e["class"] for e in result["topk"]) == [0, 1, 2, 3, 4]
    assert math.isclose(sum(scores), 1.0, rel_tol=1e-5)
    assert all(e["label"] is None for e in result["topk"])
    probs = by_hand(sfsurgery.load(model_file), video)
    for entry in result["topk"]:
        assert entry["score"] == pytest.approx(probs[entry["class"]].item(), rel=1e-4, abs=1e-6)
    top2 = predict(model_file, video, topk=2)["topk"]
    assert top2 == result["topk"][:2]
    assert len(predict(model_file, video, topk=50)["topk"]) == 5


def test_predict_labels(model_file, video, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("archery\nbowling\ncooking\ndancing\neating\n\n")
    result = predict(model_file, video, topk=3, labels=labels)
    assert [e["label"] for e in result["topk"]] == [["archery", "bowling", "cooking", "dancing", "eating"][e["class"]]
                                                    for e in result["topk"]]
    labels.write_text("only\ntwo\n")
    with pytest.raises(sfsurgery.SurgeryError, match="2 labels; the model has 5 classes"):
        predict(model_file, video, labels=labels)


def test_predict_keeps_a_head_activation_and_gray_models(tmp_path, video):
    recipe = small_recipe(activation="sigmoid")
    recipe["base"]["create_slowfast"]["input_channels"] = [1, 1]
    file = sfsurgery.apply(recipe).save(tmp_path / "gray.safetensors")
    model = sfsurgery.load(file)
    assert head_activation(model) is not None
    result = predict(file, video)
    scores = [e["score"] for e in result["topk"]]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert sum(scores) > 1.5  # sigmoid outputs, not a softmax
    expected = by_hand(model, video, channels=1, activation=lambda x: x)
    for entry in result["topk"]:
        assert entry["score"] == pytest.approx(expected[entry["class"]].item(), rel=1e-4)


def test_stock_model_rejects_the_tutorial_pack_when_alpha_does_not_divide(model_file):
    """Why pack_pathways refuses: the tutorial's T // alpha slow frames break the fusion."""
    model = sfsurgery.load(model_file)
    clip = torch.rand(3, 10, 64, 64)
    with pytest.raises(RuntimeError), torch.no_grad():
        model([p[None] for p in ref_pack_pathway(clip, 4)])
    with pytest.raises(VideoError):
        pack_pathways(clip, 4)


def test_predict_bad_inputs(model_file, video, tmp_path):
    with pytest.raises(VideoError, match="no such video"):
        predict(model_file, tmp_path / "missing.mp4")
    text = tmp_path / "renamed.mp4"
    text.write_text("hello, I am a text file\n")
    with pytest.raises(VideoError, match="not a video"):
        predict(model_file, text)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(sfsurgery.FileFormatError, match="no sfsurgery metadata"):
        predict(plain, video)
    with pytest.raises(sfsurgery.FileFormatError, match="no such file"):
        predict(tmp_path / "missing.safetensors", video)
    with pytest.raises(sfsurgery.SurgeryError, match="topk"):
        predict(model_file, video, topk=0)


def test_predict_command(model_file, video, tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["predict", str(model_file), str(video), "--json", "--topk", "3"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["video"] == str(video) and len(data["topk"]) == 3
    assert data == json.loads(json.dumps(predict(model_file, video, topk=3)))
    table = runner.invoke(main, ["predict", str(model_file), str(video)])
    assert table.exit_code == 0 and "rank" in table.stdout and len(table.stdout.strip().splitlines()) == 3 + 5
    assert str(data["topk"][0]["class"]) in table.stdout.splitlines()[3]
    text = tmp_path / "renamed.mp4"
    text.write_text("not a video")
    for args in ([str(model_file), str(text)], [str(model_file), str(tmp_path / "none.mp4")],
                 [str(video), str(video)]):
        bad = runner.invoke(main, ["predict", *args])
        assert bad.exit_code == 2, bad.output
        assert bad.stderr.startswith("error: ") and "Traceback" not in bad.output
    assert runner.invoke(main, ["predict", str(model_file), str(video), "--topk", "0"]).exit_code == 2
    bad = runner.invoke(main, ["predict", str(model_file), str(video), "--device", "nonsense"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: unknown device")
    if not torch.cuda.is_available():
        bad = runner.invoke(main, ["predict", str(model_file), str(video), "--device", "cuda"])
        assert bad.exit_code == 2 and "no CUDA device" in bad.stderr


def test_predict_command_labels_table(model_file, video, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(5)))
    out = CliRunner().invoke(main, ["predict", str(model_file), str(video), "--labels", str(labels), "--topk", "2"])
    assert out.exit_code == 0, out.output
    rows = out.stdout.strip().splitlines()[3:]
    assert len(rows) == 2 and all(row.split()[-2:] == ["class", row.split()[1]] for row in rows)
