"""evl score files (HDF5, evaluate/SCORES.md) through evl's own C++ reader and
writer, so a file is validated exactly as evl_eval and evl_ensemble validate it.

    s = evl.scores.read("scores.h5")     # s.scores (N, K) float32, s.labels, s.video_ids, ...
    evl.scores.write("mine.h5", probs, labels, ids, kind="probabilities", model="tsm-r50")
"""
from dataclasses import dataclass, field

import numpy as np

from . import _evl

__all__ = ["ScoreFile", "read", "write"]


@dataclass
class ScoreFile:
    scores: np.ndarray                    # (N, K) float32
    labels: np.ndarray                    # (N,) int64, -1 when unknown
    video_ids: list = field(default_factory=list)   # N unique non-empty strings
    kind: str = "probabilities"           # or "logits"
    num_views: int = 1
    model: str = ""                       # default on read: the file name's stem
    evl_version: str = ""


def read(path):
    """Reads and validates a score file; raises evl.Error naming the file and
    the dataset or attribute that is wrong."""
    d = _evl.read_scores(str(path))
    return ScoreFile(**d)


def write(path, scores, labels=None, video_ids=None, kind="probabilities", num_views=1,
          model=""):
    """Writes a score file atomically (temp file + rename) after validating it
    (finite scores, probabilities in [0, 1], labels in [-1, K), unique ids).
    `scores` (N, K) is converted to float32, `labels` (N,) to int64; `model`
    empty means the reader shows the file name's stem. Also accepts a
    ScoreFile as `scores` (the other arguments are then taken from it)."""
    if isinstance(scores, ScoreFile):
        s = scores
        scores, labels, video_ids, kind, num_views, model = (
            s.scores, s.labels, s.video_ids, s.kind, s.num_views, s.model)
    _evl.write_scores(str(path), np.ascontiguousarray(scores, dtype=np.float32),
                      np.ascontiguousarray(labels, dtype=np.int64), [str(v) for v in video_ids],
                      str(kind), int(num_views), str(model))
