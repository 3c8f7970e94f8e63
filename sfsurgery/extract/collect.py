"""Windows back from the model → one journal part per finished video, whatever the engine.

Both engines hand over windows (with their outputs) and, per video, an end mark with the number of
windows the decoder produced and its error, in any order; a video is written when all of its windows
are back. The progress bar (tqdm, on stderr) counts videos and shows windows per second.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from .output import Journal, VideoRows, video_table


class Collector:
    """Gathers the windows of the videos in flight; see the module docstring.

    Args:
        videos: the resolved paths, by the index the engines use.
        journal: where finished videos go. labels: the file's labels (for ``topk_label``).
        total: videos this run extracts. progress: show the bar.
    """

    def __init__(self, videos: list[str], journal: Journal, labels: tuple[str, ...] | None, total: int,
                 progress: bool):
        from tqdm import tqdm

        self.videos, self.journal, self.labels = videos, journal, labels
        self.states: dict[int, VideoRows] = {}
        self.windows = 0
        self.done = 0
        self.failures: dict[str, str] = {}
        self.started = time.perf_counter()
        self.bar = tqdm(total=total, unit="video", file=sys.stderr, disable=not progress,
                        desc="extract")

    def window(self, video: int, index: int, start: float, end: float, output: np.ndarray,
               classes: np.ndarray | None = None, scores: np.ndarray | None = None) -> None:
        """One window's output is back."""
        self.states.setdefault(video, VideoRows()).windows.append((index, start, end, output, classes, scores))
        self.windows += 1
        rate = self.windows / max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{self.windows} windows, {rate:.2f} windows/s", refresh=False)
        self._check(video)

    def end(self, video: int, count: int, error: str | None) -> None:
        """The decoder is done with a video: ``count`` windows, and the error that stopped it (or None)."""
        state = self.states.setdefault(video, VideoRows())
        state.count, state.error = count, error or None
        self._check(video)

    def _check(self, video: int) -> None:
        state = self.states[video]
        if not state.done:
            return
        del self.states[video]
        path = self.videos[video]
        self.journal.write(path, video_table(path, state, self.journal.schema, self.labels))
        if state.error is not None:
            self.failures[path] = state.error
        self.done += 1
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()

    def check_complete(self) -> None:
        """After the engine finished: every video came back whole."""
        if self.states:  # an engine lost windows: never write an output that silently misses rows
            missing = ", ".join(self.videos[i] for i in list(self.states)[:3])
            raise RuntimeError(f"extract: {len(self.states)} videos did not come back complete ({missing})")
