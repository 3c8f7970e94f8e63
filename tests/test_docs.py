"""Every shell and Python snippet in README.md and docs/ is marked, and the suite runs the runnable ones.

A snippet's marker is an HTML comment on the line before its fence:

* ``<!-- snippet: run -->``: run it (Python in one namespace per document; shell with bash -e).
* ``<!-- snippet: fixture NAME[,NAME] -->``: run it after preparing fixtures (see FIXTURES).
* ``<!-- snippet: skip REASON -->``: not run, with the reason (CUDA, installs, benchmarks, a cluster).
* ``<!-- snippet: file PATH -->``: written to PATH (e.g. a plugin's pyproject.toml).
* ``<!-- snippet: module NAME PATH -->``: written to PATH and imported as module NAME.

Each document runs in its own temporary folder holding a copy of recipes/, in order.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"<!-- snippet: (\w+)\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")
CODE = {"python", "bash", "sh", "shell", "console"}


@dataclass
class Snippet:
    doc: Path
    line: int
    lang: str
    code: str
    kind: str | None
    arg: str

    def __str__(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def snippets(doc: Path) -> list[Snippet]:
    lines = doc.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start, lang = i, fence.group(1)
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARK.fullmatch(previous.strip())
        found.append(Snippet(doc, start + 1, lang, "\n".join(lines[start + 1:i]) + "\n",
                             marker.group(1) if marker else None, marker.group(2) if marker else ""))
        i += 1
    return found


ALL = [s for doc in DOCS for s in snippets(doc)]


@pytest.mark.parametrize("snippet", [s for s in ALL if s.lang in CODE], ids=str)
def test_every_code_snippet_is_marked(snippet):
    assert snippet.kind in ("run", "fixture", "skip", "file", "module"), f"{snippet}: no snippet marker"
    if snippet.kind == "skip":
        assert snippet.arg, f"{snippet}: a skipped snippet says why"


def _write_video(path: Path) -> None:
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for _ in range(40):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _custom_head_file(folder: Path) -> None:
    subprocess.run([sys.executable, "-m", "sfsurgery.cli", "apply", "recipes/custom_head.yaml"], cwd=folder,
                   check=True, capture_output=True)


FIXTURES = {
    "clip.mp4": lambda folder, ns: _write_video(folder / "clip.mp4"),
    "clips": lambda folder, ns: ns.update(clips=__import__("torch").rand(2, 3, 32, 64, 64)),
    "custom_head": lambda folder, ns: _custom_head_file(folder),
}


def _run_python(snippet: Snippet, namespace: dict) -> None:
    exec(compile(snippet.code, str(snippet), "exec"), namespace)


def _run_shell(snippet: Snippet, folder: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(str(p) for p in folder.glob("*/src"))}
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", snippet.code], cwd=folder, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"{snippet} failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"


def _import_module(name: str, path: Path) -> None:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


@pytest.mark.parametrize("doc", [d for d in DOCS if any(s.kind in ("run", "fixture") for s in snippets(d))],
                         ids=lambda d: str(d.relative_to(ROOT)))
def test_runnable_snippets_run(doc, tmp_path, monkeypatch):
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__snippet__"}
    modules = []
    try:
        for snippet in snippets(doc):
            if snippet.kind in ("file", "module"):
                name, _, where = snippet.arg.partition(" ") if snippet.kind == "module" else ("", "", snippet.arg)
                target = tmp_path / where
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(snippet.code)
                if name:
                    _import_module(name, target)
                    modules.append(name)
                continue
            if snippet.kind == "fixture":
                for fixture in snippet.arg.split(","):
                    FIXTURES[fixture.strip()](tmp_path, namespace)
            elif snippet.kind != "run":
                continue
            if snippet.lang == "python":
                _run_python(snippet, namespace)
            elif snippet.lang in CODE:
                _run_shell(snippet, tmp_path)
    finally:
        for name in modules:
            sys.modules.pop(name, None)
        import sfsurgery.plugins

        sfsurgery.plugins.unregister_research_ops()
