"""The curation steps behind ``tools/curate.py``: read an embedding (optionally restricted to an
earlier step's selection), select, and write what training reads.

Each step writes into its output folder:

- ``selection.npy``: the dataset indices (of the embedded source) it keeps, sorted;
- ``files.txt``: those images as a file list (``path label`` lines, absolute paths) for a folder or
  file-list source, which ``data=filelist data.path=OUT/files.txt`` trains on;
- ``shards/`` with ``--shards``: the selected images as tar shards (``data=shards``), the only
  trainable output for a tar-shard source;
- ``report.json``: counts, parameters, the command, and the earlier steps' reports.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sslframe.curate.embed import PLAN_NAME
from sslframe.data.shards import ShardIndex, parse_sample, read_samples
from sslframe.data.sources import FileListSource, ImageFolderSource
from sslframe.errors import UserError
from sslframe.eval.store import FeatureSet, read_features


@dataclass
class Pool:
    """An embedding's rows (those kept by ``after``, if given) and where its images live."""

    features: np.ndarray
    indices: np.ndarray  # dataset index of each row
    labels: np.ndarray
    hashes: list[str]
    plan: dict[str, Any]
    folder: Path
    previous: dict[str, Any] | None


def load_pool(features: str | Path, after: str | Path | None = None) -> Pool:
    folder = Path(features)
    plan_path = folder / PLAN_NAME
    if not plan_path.is_file():
        raise UserError(f"'{folder}' is not an embedding of tools/curate.py embed (no {PLAN_NAME})")
    fs: FeatureSet = read_features(folder)
    keep = np.ones(len(fs.indices), dtype=bool)
    plan = json.loads(plan_path.read_text())
    previous = None
    if after:
        selection, previous = read_selection(after)
        theirs = (previous.get("source") or {}).get("path")
        if theirs != plan.get("path"):
            raise UserError(
                f"--after {after} selected images of '{theirs}', these features embed '{plan.get('path')}': "
                "both must embed the same pool"
            )
        keep = np.isin(fs.indices.numpy(), selection)
    rows = np.flatnonzero(keep)
    return Pool(
        features=fs.features.numpy()[rows],
        indices=fs.indices.numpy()[rows],
        labels=fs.labels.numpy()[rows],
        hashes=[fs.hashes[i] for i in rows] if fs.hashes else [],
        plan=plan,
        folder=folder,
        previous=previous,
    )


def read_selection(folder: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    folder = Path(folder)
    try:
        return np.load(folder / "selection.npy"), json.loads((folder / "report.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(
            f"'{folder}' holds no curation step's output ({type(exc).__name__}); give an OUT of a step"
        ) from None


def label_counts(labels: np.ndarray) -> dict[str, int] | None:
    """Images per known label (None when the source has no labels)."""
    if len(labels) == 0 or labels.min() < 0:
        return None
    values, counts = np.unique(labels, return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)}


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["tools/curate.py", *sys.argv[1:]])


def write_step(
    out: str | Path,
    pool: Pool,
    rows: np.ndarray,
    step: str,
    parameters: dict[str, Any],
    counts: dict[str, Any],
    shards: str = "",
    per_shard: int = 0,
    started: float | None = None,
) -> dict[str, Any]:
    """Write the selection of ``rows`` (row numbers of ``pool``) and its report; returns it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    selected = np.sort(pool.indices[rows])
    report: dict[str, Any] = {
        "step": step,
        "command": command_line(),
        "features": str(pool.folder.resolve()),
        "source": {k: pool.plan.get(k) for k in ("source", "path", "checkpoint", "layer")},
        "parameters": parameters,
        "input": len(pool.indices),
        "selected": len(selected),
        **counts,
        "labels_before": label_counts(pool.labels),
        "labels_after": label_counts(pool.labels[rows]),
    }
    np.save(out / "selection.npy", selected)
    files = write_file_list(pool.plan, selected, out / "files.txt")
    report["files"] = str(files) if files else None
    if shards:
        report["shards"] = write_selected_shards(pool.plan, selected, shards, per_shard)
    if started is not None:
        report["seconds"] = round(time.monotonic() - started, 1)
    report["previous"] = pool.previous
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


def _listed_source(plan: dict[str, Any]) -> ImageFolderSource | FileListSource | None:
    if plan["source"] == "folder":
        return ImageFolderSource(plan["path"])
    if plan["source"] == "filelist":
        return FileListSource(plan["path"])
    return None


def _check_size(source: Any, plan: dict[str, Any]) -> None:
    if len(source) != plan["num_samples"]:
        raise UserError(
            f"'{plan['path']}' now holds {len(source)} images, the embedding {plan['num_samples']}: "
            "the source changed since it was embedded; embed it again"
        )


def write_file_list(plan: dict[str, Any], selected: np.ndarray, path: Path) -> Path | None:
    """``path label`` lines of the selected images (absolute paths); None for tar shards."""
    source = _listed_source(plan)
    if source is None:
        return None
    _check_size(source, plan)
    base = source.root if isinstance(source, ImageFolderSource) else source.path.parent
    lines = []
    for i in selected.tolist():
        sample = source.samples[i]
        where = sample.key if "://" in sample.key else str((base / sample.key).resolve())
        if any(c.isspace() for c in where.splitlines()[0]) and sample.label < 0:
            raise UserError(f"image path '{where}' has white space: a file list cannot name it unlabelled")
        lines.append(f"{where} {sample.label}" if sample.label >= 0 else where)
    path.write_text("\n".join(lines) + "\n")
    return path


class _Selected:
    """The selected samples of a source as a map-style source read strictly in order (tar
    shards are streamed once), for ``sslframe.data.shard_writer.write_shards``."""

    def __init__(self, plan: dict[str, Any], selected: np.ndarray) -> None:
        self.selected = selected
        self.listed = _listed_source(plan)
        if self.listed is not None:
            _check_size(self.listed, plan)
            self.classes = getattr(self.listed, "classes", [])
            self._stream: Iterator[tuple[str, bytes, int]] | None = None
        else:
            index = ShardIndex(plan["path"])
            self.classes = index.classes
            self._stream = self._from_shards(index)
        self._next = 0

    def __len__(self) -> int:
        return len(self.selected)

    def key(self, i: int) -> str:
        return str(int(self.selected[i]))

    def read(self, i: int) -> tuple[str, bytes, int]:
        if self.listed is not None:
            return self.listed.read(int(self.selected[i]))
        if i != self._next:
            raise RuntimeError("selected tar-shard samples must be read in order")
        self._next += 1
        assert self._stream is not None
        return next(self._stream)

    def _from_shards(self, index: ShardIndex) -> Iterator[tuple[str, bytes, int]]:
        wanted = self.selected
        pos = 0
        for shard in range(len(index.shards)):
            lo, hi = int(index.offsets[shard]), int(index.offsets[shard + 1])
            if pos >= len(wanted) or wanted[pos] >= hi:
                continue
            for offset, sample in enumerate(read_samples(index.url(shard))):
                if pos < len(wanted) and wanted[pos] == lo + offset:
                    yield parse_sample(sample)
                    pos += 1
        if pos < len(wanted):
            raise UserError(f"the shards under '{index.location}' hold fewer samples than when they were embedded")


def write_selected_shards(plan: dict[str, Any], selected: np.ndarray, out: str, per_shard: int) -> dict[str, Any]:
    from sslframe.data.shard_writer import write_shards

    if per_shard < 1:
        raise UserError("--shards needs --per-shard N (images per shard)")
    report = write_shards(_Selected(plan, selected), out, per_shard=per_shard, seed=None)
    return {"index": report.index, "shards": len(report.shards), "written": report.written}
