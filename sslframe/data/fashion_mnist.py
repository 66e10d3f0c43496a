"""Fashion-MNIST (Xiao et al. 2017) from Debian's ``dataset-fashion-mnist`` IDX files, written
as an image folder (``train/`` and ``test/``, one sub-folder per class) that the folder source reads."""

from __future__ import annotations

import gzip
import struct
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from sslframe.errors import UserError

CLASSES = (
    "0_tshirt_top",
    "1_trouser",
    "2_pullover",
    "3_dress",
    "4_coat",
    "5_sandal",
    "6_shirt",
    "7_sneaker",
    "8_bag",
    "9_ankle_boot",
)
PACKAGE = "dataset-fashion-mnist"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def find_idx_dir() -> Path:
    """Where the Debian package put the IDX files (asks dpkg, then the usual place)."""
    try:
        listing = subprocess.run(["dpkg", "-L", PACKAGE], capture_output=True, text=True, check=False).stdout
        for line in listing.splitlines():
            if line.endswith(FILES["train"][0]):
                return Path(line).parent
    except FileNotFoundError:
        pass
    if (DEFAULT_DIR / FILES["train"][0]).is_file():
        return DEFAULT_DIR
    raise UserError(
        f"Fashion-MNIST files not found; install them with: sudo apt-get install {PACKAGE} "
        "(or pass --idx-dir DIR holding the four IDX .gz files)"
    )


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (LeCun's MNIST format: magic, dims, big-endian sizes, raw bytes)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise UserError(f"'{path}' is not an IDX file of unsigned bytes")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise UserError(f"'{path}' is truncated")
    return array.reshape(shape)


def prepare(out: Path, idx_dir: Path | None = None, limit: int = 0) -> dict[str, int]:
    """Write ``out/{train,test}/<class>/<index>.png``; skips a split already complete."""
    idx_dir = idx_dir or find_idx_dir()
    counts = {}
    for split, (images_file, labels_file) in FILES.items():
        images = read_idx(idx_dir / images_file)
        labels = read_idx(idx_dir / labels_file)
        if limit:
            images, labels = images[:limit], labels[:limit]
        folder = out / split
        marker = folder / ".complete"
        if marker.is_file() and marker.read_text().strip() == str(len(images)):
            counts[split] = len(images)
            continue
        for name in CLASSES:
            (folder / name).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(image, mode="L").save(folder / CLASSES[label] / f"{i:05d}.png", optimize=False)
        marker.write_text(str(len(images)))
        counts[split] = len(images)
    return counts
