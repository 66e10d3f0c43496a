"""Sweeps: ``tools/train.py -m optim.lr=0.6,1.2,2.4 ...`` runs or submits one job per point.

Overrides use Hydra's sweep syntax (``a,b,c``, ``range(...)``, ``choice(...)``) and are
expanded to their Cartesian product, like Hydra's basic sweeper. Each point gets its own run
dir under the sweep dir (the composed ``run.dir``): ``<run.dir>/<index>_<point's overrides>``,
and ``<run.dir>/sweep.json`` lists the points for tools/sweep_status.py.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig

from launch.records import now_iso
from sslframe.errors import UserError

SWEEP_FILE = "sweep.json"


def expand(overrides: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """(fixed overrides, one list of overrides per sweep point), points in Cartesian order."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise UserError(f"bad sweep override: {str(exc).splitlines()[0]}") from None
    fixed: list[str] = []
    axes: list[list[str]] = []
    for override in parsed:
        if not override.is_sweep_override():
            fixed.append(override.input_line)
            continue
        key = override.get_key_element()
        if key == "run.dir":
            raise UserError("run.dir cannot be swept: it is the sweep dir that holds one run dir per point")
        axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
    return fixed, [list(point) for point in itertools.product(*axes)]


def point_dir(sweep_dir: Path, index: int, point: Sequence[str]) -> Path:
    """``<sweep_dir>/<index>_<overrides>`` with characters that are awkward in paths replaced."""
    label = re.sub(r"[^A-Za-z0-9._,+-]+", "-", ",".join(point))[:120] or "point"
    return sweep_dir / f"{index}_{label}"


def run_sweep(
    overrides: Sequence[str],
    compose: Callable[[Sequence[str]], DictConfig],
    launchers: Callable[[str], Callable[[DictConfig, Sequence[str]], int]],
) -> int:
    """Compose, validate and launch every point; returns the first non-zero launcher status."""
    fixed, points = expand(overrides)
    base = compose([*fixed, *points[0]])
    sweep_dir = Path(base.run.dir).resolve()
    runs = []
    for index, point in enumerate(points):
        run_dir = point_dir(sweep_dir, index, point)
        if "'" in str(run_dir):
            raise UserError(f"the sweep dir cannot contain a quote: {sweep_dir}")
        runs.append((run_dir, [*fixed, *point, f"run.dir='{run_dir}'"]))
    # Every point is composed (and so validated) before anything is launched.
    configs = [compose(point_overrides) for _, point_overrides in runs]
    sweep_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "created": now_iso(),
        "overrides": list(overrides),
        "points": [{"dir": run_dir.name, "overrides": point} for (run_dir, _), point in zip(runs, points, strict=True)],
    }
    (sweep_dir / SWEEP_FILE).write_text(json.dumps(record, indent=2) + "\n")
    print(f"sweep of {len(points)} points in {sweep_dir}")
    status = 0
    for cfg, (_, point_overrides) in zip(configs, runs, strict=True):
        code = launchers(cfg.launcher.name)(cfg, point_overrides)
        status = status or code
    return status
