"""Files that carry their class names and preprocessing: labels, preprocess, transform, windows, predict.

Expected clips come from frames decoded separately with PyAV and processed by hand.
"""

from __future__ import annotations

import torch
import yaml
from click.testing import CliRunner
from test_video import all_frames, write_video

import sfsurgery
from sfsurgery.cli import main
from sfsurgery.decode import iter_windows
from sfsurgery.errors import RecipeError, VideoError

SMALL = {"create_slowfast": {"model_depth": 18, "head_pool_kernel_sizes": [[2, 2, 2], [8, 2, 2]]}}
LABELS = ["archery", "bowling", "cooking", "dancing", "eating"]


def recipe(**extra) -> dict:
    return {"name": "deploy", "base": SMALL, "input": {"frames": 8, "size": [64, 64]},
            "ops": [{"op": "replace_head", "num_classes": 5}], **extra}


def by_hand(frames: torch.Tensor, picks: list[int], side_hw: tuple[int, int], crop_at: tuple[int, int],
            mean=0.45, std=0.225) -> torch.Tensor:
    clip = frames[picks].permute(3, 0, 1, 2).float() / 255.0
    clip = torch.nn.functional.interpolate(clip, size=side_hw, mode="bilinear", align_corners=False)
    i, j = crop_at
    return (clip[..., i:i + 64, j:j + 64] - mean) / std


def test_labels_and_preprocess_travel_in_the_file(tmp_path):
    (tmp_path / "classes.txt").write_text("\n".join(LABELS) + "\n\n")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe(save={"labels": "classes.txt"},
                                                           preprocess={"sampling_rate": 3, "side": 80})))
    path = sfsurgery.apply(tmp_path / "r.yaml").save(tmp_path / "m.safetensors")
    info = sfsurgery.inspect_file(path)
    assert info["labels"] == LABELS
    assert info["preprocess"] == {"sampling_rate": 3, "side": 80, "mean": [0.45] * 3, "std": [0.225] * 3}
    run = CliRunner().invoke(main, ["inspect", str(path)])
    assert "labels    archery, bowling" in run.stdout and "sampling rate 3, short side 80" in run.stdout
    t = sfsurgery.transform(path)
    assert (t.span, t.preprocess.side, tuple(t.input.size)) == (24, 80, (64, 64))


def test_side_follows_a_changed_crop_and_may_not_be_smaller():
    assert sfsurgery.load_recipe(recipe()).preprocess.side == round(64 * 256 / 224)
    assert sfsurgery.load_recipe({"base": SMALL}).preprocess.side == 256  # the base's, crop unchanged
    try:
        sfsurgery.load_recipe(recipe(preprocess={"side": 50}))
    except RecipeError as exc:
        assert exc.where.field == "preprocess.side" and "smaller than the 64-pixel crop" in exc.detail and exc.hint
    else:
        raise AssertionError("side below the crop must be refused")


def test_a_label_count_mismatch_is_refused_before_any_work(tmp_path):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe(save={"labels": LABELS[:2]})))
    run = CliRunner().invoke(main, ["apply", str(tmp_path / "r.yaml"), "-o", str(tmp_path / "out.safetensors")])
    assert run.exit_code == 2 and run.stderr.startswith("error: save.labels: 2 labels for a head of 5 classes")
    assert not (tmp_path / "out.safetensors").exists()


def test_windows_are_the_documented_frames(tmp_path):
    video = write_video(tmp_path / "v.mp4", n=45)
    frames = all_frames(video)
    path = sfsurgery.apply(recipe()).save(tmp_path / "m.safetensors")
    t = sfsurgery.transform(path)  # 8 frames x sampling rate 2 = 16 source frames, side 73
    stride_frames = 10  # --stride 0.4 s at 25 fps
    windows = list(iter_windows(video, t, stride=0.4))
    starts = list(range(0, 45 - 16 + 1, stride_frames))
    assert [(w.index, w.first, w.last) for w in windows] == [(k, s, s + 15) for k, s in enumerate(starts)]
    assert windows[1].start == 10 / 25 and windows[1].end == 26 / 25
    for window in windows:
        picks = [window.first + i for i in torch.linspace(0, 15, 8).long().tolist()]
        torch.testing.assert_close(window.clip, by_hand(frames, picks, (73, 97), (4, 16)), rtol=1e-5, atol=1e-5)
    short = write_video(tmp_path / "short.mp4", n=7)
    (only,) = list(iter_windows(short, t))
    assert (only.first, only.last) == (0, 6)
    picks = torch.linspace(0, 6, 8).long().tolist()
    torch.testing.assert_close(only.clip, by_hand(all_frames(short), picks, (73, 97), (4, 16)), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model = sfsurgery.load(path)
        torch.testing.assert_close(model(t(frames[:16])), model(t.pack(windows[0].clip[None])), rtol=1e-5, atol=1e-6)


def test_predict_uses_the_files_labels_and_refuses_feature_files(tmp_path):
    video = write_video(tmp_path / "v.mp4", n=40)
    path = sfsurgery.apply(recipe(save={"labels": LABELS})).save(tmp_path / "m.safetensors")
    result = sfsurgery.predict(path, video, topk=2)
    assert [e["label"] for e in result["topk"]] == [LABELS[e["class"]] for e in result["topk"]]
    run = CliRunner().invoke(main, ["predict", str(path), str(video)])
    assert run.exit_code == 0 and LABELS[result["topk"][0]["class"]] in run.stdout
    features = sfsurgery.apply({**recipe(), "ops": [{"op": "truncate", "after": "blocks.4", "pool": True}]})
    feature_file = features.save(tmp_path / "f.safetensors")
    run = CliRunner().invoke(main, ["predict", str(feature_file), str(video)])
    assert run.exit_code == 2 and "is not a classifier" in run.stderr and "hint: " in run.stderr


def test_transform_refuses_what_it_cannot_normalise(tmp_path):
    rgbd = sfsurgery.apply({**recipe(), "ops": [{"op": "adapt_stem", "in_channels": 4}]})
    t = sfsurgery.transform(rgbd.save(tmp_path / "rgbd.safetensors"))
    try:
        t(torch.zeros(16, 64, 64, 3, dtype=torch.uint8))
    except VideoError as exc:
        assert exc.hint
    else:
        raise AssertionError("a 3-channel video does not make a 4-channel clip")
