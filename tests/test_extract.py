"""sfsurgery extract: windows and outputs against an independent reference, errors, exit codes, resume, Ray.

The reference decodes every frame with PyAV on its own, picks each window's frames by the
documented indices, transforms them with plain torch and runs the model loaded with
``sfsurgery.load``; nothing in it comes from sfsurgery's decoding or transform code.
"""

from __future__ import annotations

import json
import math

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from torch.nn import functional as F

import sfsurgery
from sfsurgery.cli import main
from sfsurgery.extract import model as extract_model
from sfsurgery.extract.inputs import collect_videos
from sfsurgery.extract.output import Journal
from sfsurgery.file.reader import read_file_header

FRAMES, RATE, SIDE, SIZE, ALPHA = 8, 2, 73, 64, 4
BASE = {"create_slowfast": {"model_depth": 18, "head_pool_kernel_sizes": [[2, 2, 2], [8, 2, 2]]}}
LABELS = ["walk", "run", "jump", "swim", "sit"]


def write_video(path, n: int, *, fps: int = 25, w: int = 80, h: int = 60, seed: int = 0, options=None):
    """A moving pattern with noise, mpeg4; ``options`` go to the muxer (e.g. faststart)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            img = np.stack([(x * 3 + i * 7 + seed * 50) % 256, (y * 2 + i * 5) % 256, (x + y + i * 11) % 256], -1)
            img = np.clip(img + rng.integers(-25, 25, img.shape), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    videos = {"long": write_video(root / "long.mp4", 70, fps=25),
              "avi": write_video(root / "other.avi", 41, fps=15, w=64, h=90, seed=1),
              "short": write_video(root / "short.mp4", 11, fps=25, seed=2)}
    # moov atom first, then the last fifth of the frame data zeroed: windows decode, then the decoder fails
    good = write_video(root / "good.mp4", 100, seed=3, options={"movflags": "faststart"}).read_bytes()
    cut = len(good) * 4 // 5
    (root / "corrupt.mp4").write_bytes(good[:cut] + bytes(len(good) - cut))
    (root / "empty.mp4").write_bytes(b"")
    videos.update(corrupt=root / "corrupt.mp4", empty=root / "empty.mp4", missing=root / "missing.mp4",
                  audio=write_audio(root / "speech.m4a"))
    return videos


def small_file(path, ops, **save):
    recipe = {"name": "small", "base": BASE, "input": {"frames": FRAMES, "size": [SIZE, SIZE]},
              "preprocess": {"sampling_rate": RATE, "side": SIDE}, "ops": ops, "save": save}
    return sfsurgery.apply(recipe).save(path)


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    return small_file(tmp_path_factory.mktemp("model") / "features.safetensors",
                      [{"op": "truncate", "after": "blocks.4", "pool": True}])


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return small_file(tmp_path_factory.mktemp("model") / "classifier.safetensors",
                      [{"op": "replace_head", "num_classes": len(LABELS)}], labels=LABELS)


# --- the independent reference ------------------------------------------------------------------


def decode_all(path) -> tuple[list[np.ndarray], float, bool]:
    """Every frame PyAV gives (until a decoding error), the stream's rate, and whether it failed."""
    frames, failed = [], False
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate)
        try:
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
        except av.FFmpegError:
            failed = True
    return frames, fps, failed


def reference(path, model, *, stride=None, rate=RATE):
    """[(window, start, end, output)] as documented: windows of frames x rate source frames every stride."""
    frames, fps, failed = decode_all(path)
    span = FRAMES * rate
    step = span if stride is None else max(1, round(stride * fps))
    spans = [(k * step, span) for k in range(len(frames)) if k * step + span <= len(frames)]
    if not spans and frames and not failed:  # a whole video shorter than a clip: one window over all of it
        spans = [(0, len(frames))]
    rows = []
    for k, (first, count) in enumerate(spans):
        picks = first + torch.linspace(0, count - 1, FRAMES).long()
        x = torch.from_numpy(np.stack([frames[int(i)] for i in picks])).permute(0, 3, 1, 2).float() / 255
        h, w = x.shape[-2:]
        size = (math.floor(h / w * SIDE), SIDE) if w < h else (SIDE, math.floor(w / h * SIDE))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        top, left = int(round((size[0] - SIZE) / 2)), int(round((size[1] - SIZE) / 2))
        x = ((x[..., top:top + SIZE, left:left + SIZE] - 0.45) / 0.225).permute(1, 0, 2, 3)  # (C, T, h, w)
        slow = x[:, torch.linspace(0, FRAMES - 1, FRAMES // ALPHA).long()]
        with torch.no_grad():
            out = model([slow[None], x[None]])
        rows.append((k, first / fps, (first + count) / fps, out.reshape(-1).numpy()))
    return rows, failed


def read_rows(path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def run(*args):
    result = CliRunner().invoke(main, ["extract", *map(str, args)])
    return result


def check_video_rows(rows, expected, failed, tol=1e-4):
    windows = [r for r in rows if r["error"] is None]
    assert [r["window"] for r in windows] == [e[0] for e in expected]
    for row, (_, start, end, out) in zip(windows, expected):
        assert row["start"] == pytest.approx(start) and row["end"] == pytest.approx(end)
        got = np.array(row["output"], np.float32)
        assert got.shape == out.shape
        assert np.abs(got - out).max() <= tol * max(1.0, np.abs(out).max())
    errors = [r for r in rows if r["error"] is not None]
    assert len(errors) == int(failed)
    for row in errors:
        assert row["window"] is None and row["start"] is None and row["end"] is None and row["output"] is None
    if errors:
        assert rows[-1] is errors[0]  # the error row follows the windows decoded before the failure


# --- tests ----------------------------------------------------------------------------------------


def test_corpus_rows_match_the_reference_and_failures_are_rows(features, corpus, tmp_path):
    order = ["long", "missing", "avi", "audio", "short", "corrupt", "empty"]
    out = tmp_path / "features.parquet"
    result = run(features, *(corpus[k] for k in order), "-o", out, "--workers", 1, "--batch-size", 3)
    assert result.exit_code == 3, result.output
    assert "wrote" in result.stdout and not (tmp_path / "features.parquet.partial").exists()
    rows = read_rows(out)
    videos = [str(corpus[k].resolve()) for k in order]
    assert [r["video"] for r in rows] == sorted((r["video"] for r in rows), key=videos.index)  # input order
    model = sfsurgery.load(features)
    for key, video in zip(order, videos):
        mine = [r for r in rows if r["video"] == video]
        if key in ("missing", "audio", "empty"):
            assert len(mine) == 1 and mine[0]["error"] and mine[0]["window"] is None, key
            continue
        expected, failed = reference(corpus[key], model)
        assert failed == (key == "corrupt") and expected, key
        check_video_rows(mine, expected, failed)
    assert sum(1 for r in rows if r["window"] is not None) == sum(
        len(reference(corpus[k], model)[0]) for k in ("long", "avi", "short", "corrupt"))
    assert len([r for r in rows if r["video"] == videos[4]]) == 1  # shorter than a clip: one window
    meta = json.loads(pq.read_schema(out).metadata[b"sfsurgery.extract"])
    header = sfsurgery.inspect_file(features)
    assert meta["sampling_rate"] == RATE and meta["stride"] is None and meta["topk"] is None
    assert meta["model_sha256"] == read_file_header(features).recorded.sha256
    assert header["output_shape"][1] == len(rows[0]["output"])


def test_stride_and_sampling_rate_overrides_in_the_python_api(features, corpus, tmp_path):
    out = tmp_path / "strided.parquet"
    summary = sfsurgery.extract(features, [corpus["long"], corpus["avi"]], out, stride=0.3, sampling_rate=3,
                                workers=0, batch_size=4)
    rows = read_rows(out)
    assert summary["path"] == str(out) and summary["videos"] == 2 and summary["failed"] == 0
    assert summary["windows"] == len(rows) and summary["failures"] == [] and summary["seconds"] > 0
    model = sfsurgery.load(features)
    for video in ("long", "avi"):
        expected, failed = reference(corpus[video], model, stride=0.3, rate=3)
        assert len(expected) > 1
        check_video_rows([r for r in rows if r["video"] == str(corpus[video].resolve())], expected, failed)


def test_classifier_topk_and_labels(classifier, corpus, tmp_path):
    out = tmp_path / "scores.parquet"
    result = run(classifier, corpus["long"], corpus["short"], "-o", out, "--topk", 2, "--workers", 0, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["windows"] == len(read_rows(out))
    rows = read_rows(out)
    model = sfsurgery.load(classifier)
    for key in ("long", "short"):
        expected, failed = reference(corpus[key], model)
        mine = [r for r in rows if r["video"] == str(corpus[key].resolve())]
        check_video_rows(mine, expected, failed)
        for row in mine:
            probs = torch.tensor(row["output"]).softmax(0)  # the head has no activation: ranked by softmax
            order = probs.argsort(descending=True)[:2].tolist()
            assert row["topk_class"] == order and row["topk_label"] == [LABELS[i] for i in order]
            assert row["topk_score"] == pytest.approx(probs[order].tolist(), rel=1e-5)
    schema = pq.read_schema(out)
    assert str(schema.field("topk_label").type) == "list<element: string>"
    assert str(schema.field("output").type) == "list<element: float>"


def test_inputs_folders_and_manifests(corpus, tmp_path):
    folder = tmp_path / "set"
    (folder / "sub").mkdir(parents=True)
    a = write_video(folder / "sub" / "b.MP4", 5)
    b = write_video(folder / "a.avi", 5)
    (folder / "notes.txt").write_text("not a manifest inside a folder")
    (tmp_path / "list.txt").write_text(f"# a comment\nset/a.avi\n\n{corpus['short']}\nset/sub/b.MP4\n")
    (tmp_path / "list.csv").write_text("id,path\n1,set/sub/b.MP4\n2,gone.mp4\n")
    found = collect_videos([folder, tmp_path / "list.txt", tmp_path / "list.csv", corpus["short"]])
    assert found == [b.resolve(), a.resolve(), corpus["short"].resolve(), (tmp_path / "gone.mp4").resolve()]


def test_usage_errors_exit_2_with_a_hint(features, corpus, tmp_path, monkeypatch):
    (tmp_path / "nothing").mkdir()
    (tmp_path / "exists.parquet").write_bytes(b"x")
    (tmp_path / "bad.csv").write_text("file\na.mp4\n")
    out = tmp_path / "o.parquet"
    cases = [
        ([features, "-o", out], "no inputs"),
        ([features, tmp_path / "nothing", "-o", out], "holds no videos"),
        ([features, tmp_path / "missing.txt", "-o", out], "no such manifest"),
        ([features, tmp_path / "bad.csv", "-o", out], "no 'path' column"),
        ([features, corpus["long"], "-o", tmp_path / "exists.parquet"], "exists"),
        ([features, corpus["long"], "-o", out, "--topk", 3], "needs class labels"),
        ([features, corpus["long"], "-o", out, "--stride", 0], "stride"),
        ([corpus["long"], corpus["long"], "-o", out], "not a model file"),
    ]
    for args, message in cases:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr and "\nhint: " in result.stderr, (args, result.stderr)
        assert not out.exists() and not (tmp_path / "o.parquet.partial").exists()
    monkeypatch.setattr(extract_model, "MAX_OUTPUT", 1000)  # the features file returns 2304 values
    result = run(features, corpus["long"], "-o", out)
    assert result.exit_code == 2 and "at most 1,000" in result.stderr and "pool: true" in result.stderr


def test_resume_keeps_finished_videos_unopened(features, corpus, tmp_path, monkeypatch):
    work = tmp_path / "v"
    work.mkdir()
    one, two, three = work / "one.mp4", work / "two.mp4", work / "three.mp4"
    write_video(one, 40, seed=4)
    write_video(two, 40, seed=5)
    out = tmp_path / "r.parquet"
    # a run that dies after its first video: the journal keeps it, no output is written
    real_write, written = Journal.write, []

    def write_then_die(self, video, table):
        real_write(self, video, table)
        written.append(video)
        raise KeyboardInterrupt

    monkeypatch.setattr(Journal, "write", write_then_die)
    result = run(features, one, two, three, "-o", out, "--workers", 0, "--batch-size", 1)
    assert result.exit_code == 130 and "--resume" in result.stderr
    assert written == [str(one.resolve())] and not out.exists()
    assert len(list((tmp_path / "r.parquet.partial").glob("*.parquet"))) == 1
    monkeypatch.setattr(Journal, "write", real_write)
    assert run(features, one, two, three, "-o", out).exit_code == 2  # a journal: --resume or --force
    first = pq.read_table(next((tmp_path / "r.parquet.partial").glob("*.parquet"))).to_pylist()
    assert len(first) == 2 and all(r["video"] == str(one.resolve()) and r["error"] is None for r in first)
    one.write_bytes(b"garbage: if extract opened this again its rows would be an error")
    result = run(features, one, two, three, "-o", out, "--resume", "--workers", 1)
    assert result.exit_code == 3, result.output  # three.mp4 does not exist yet
    rows = read_rows(out)
    assert [r for r in rows if r["video"] == str(one.resolve())] == first
    assert [r["video"] for r in rows][-1] == str(three.resolve()) and rows[-1]["error"]
    # an output with an error row: resume retries only that video; finished ones stay as they are
    before = [r for r in rows if r["error"] is None]
    write_video(two, 40, seed=9)  # changed bytes: it must not be opened again either
    write_video(three, 40, seed=6)
    result = run(features, one, two, three, "-o", out, "--resume", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["skipped"] == 2 and summary["failed"] == 0
    rows = read_rows(out)
    assert rows[:len(before)] == before and all(r["video"] == str(three.resolve()) for r in rows[len(before):])
    expected, failed = reference(three, sfsurgery.load(features))
    check_video_rows(rows[len(before):], expected, failed)
    # other parameters than the rows were made with: refused
    for extra in (["--stride", 0.5], ["--sampling-rate", 1]):
        result = run(features, one, "-o", out, "--resume", *extra)
        assert result.exit_code == 2 and "made with" in result.stderr and "hint: " in result.stderr
    assert read_rows(out) == rows


def test_ray_engine_equals_the_local_engine(classifier, corpus, tmp_path):
    ray = pytest.importorskip("ray")
    inputs = [corpus[k] for k in ("long", "missing", "avi", "corrupt", "short")]
    local = sfsurgery.extract(classifier, inputs, tmp_path / "local.parquet", workers=1, batch_size=2, topk=2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = sfsurgery.extract(classifier, inputs, tmp_path / "ray.parquet", engine="ray", batch_size=3, topk=2)
    finally:
        ray.shutdown()
    # decoding and the model ran as separate stages (Ray fuses them when their resources are equal)
    assert any(op.startswith("FlatMap(") for op in remote["ray_operators"])
    assert any(op.startswith("MapBatches(") for op in remote["ray_operators"])
    assert not any("->" in op for op in remote["ray_operators"])
    assert (remote["videos"], remote["windows"], remote["failed"]) == (local["videos"], local["windows"],
                                                                      local["failed"])
    a, b = read_rows(tmp_path / "local.parquet"), read_rows(tmp_path / "ray.parquet")
    assert [(r["video"], r["window"], r["start"], r["end"], r["error"]) for r in a] == \
        [(r["video"], r["window"], r["start"], r["end"], r["error"]) for r in b]
    for x, y in zip(a, b):
        if x["output"] is not None:
            assert np.abs(np.array(x["output"]) - np.array(y["output"])).max() <= 1e-5
            assert x["topk_class"] == y["topk_class"] and x["topk_label"] == y["topk_label"]
            assert np.abs(np.array(x["topk_score"]) - np.array(y["topk_score"])).max() <= 1e-5
        else:
            assert y["output"] is None and y["topk_class"] is None
    assert pq.read_schema(tmp_path / "ray.parquet").equals(pq.read_schema(tmp_path / "local.parquet"))
