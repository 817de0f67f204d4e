"""Peak memory of building each file dataset, over the float32 size of the data it yields.

For each file format (``npy``, ``npz``, ``mnist_idx``, ``image_folder``, ``csv``),
the script writes a file of about ``--values`` numbers (with class labels) under a
temporary folder, then builds the dataset in a fresh Python process that has
imported torch and the plugins already, and reads that process's peak resident
memory (``ru_maxrss``) before and after the build.  The ratio printed is the peak's
growth over the float32 bytes of ``x``: the baseline is the data itself, measured
in the same run.  Also with ``--transforms``, the same with ``standardise``.

    python benchmarks/data_memory.py [--values 4000000] [--columns 20]
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

#: Run in a fresh process: build ``type`` with ``params`` and print the growth of the peak resident memory, in bytes.
BUILD = """
import json, resource, sys
import torch
import compose_gen_plugins.datasets as plugin
from compose_gen import make_catalogue
component = make_catalogue([plugin], entry_points=False).get(sys.argv[1])
params = component.params.model_validate(json.loads(sys.argv[2]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
splits = component.build(params, None)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
print(json.dumps({"grown": grown, "x": (len(splits.train) + len(splits.test)) * splits.train.fields["x"][0].numel() * 4}))
"""


def idx(array: np.ndarray) -> bytes:
    """``array`` (unsigned bytes) in MNIST's IDX format: magic 0x0000 08 <dims>, the sizes big-endian, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_files(folder: Path, values: int, columns: int) -> dict[str, dict]:
    """One file (or folder) per format holding about ``values`` numbers; the dataset params that read each."""
    rng = np.random.default_rng(0)
    side = 28
    images = rng.integers(0, 256, size=(max(1, values // side**2), side, side), dtype=np.uint8)
    labels = rng.integers(0, 10, size=len(images))
    np.save(folder / "x.npy", images.reshape(len(images), -1))
    np.save(folder / "y.npy", labels)
    np.savez(folder / "data.npz", x=images.reshape(len(images), -1), y=labels)
    (folder / "images.idx.gz").write_bytes(gzip.compress(idx(images), compresslevel=1))
    (folder / "labels.idx").write_bytes(idx(labels.astype(np.uint8)))
    pictures = folder / "pictures"
    for label in range(10):
        (pictures / str(label)).mkdir(parents=True)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(image).save(pictures / str(label) / f"{i}.png")
    table = rng.normal(size=(max(1, values // columns), columns)).astype(np.float32)
    with (folder / "table.csv").open("w") as handle:
        handle.write(",".join([f"f{i}" for i in range(columns)] + ["label"]) + "\n")
        for row, label in zip(table, rng.integers(0, 10, size=len(table)), strict=True):
            handle.write(",".join(f"{v:.6g}" for v in row) + f",{label}\n")
    return {
        "npy": {"type": "npy", "path": folder / "x.npy", "y_path": folder / "y.npy", "pixel_max": 255},
        "npz": {"type": "npz", "path": folder / "data.npz", "y_key": "y", "pixel_max": 255},
        "mnist_idx": {"type": "mnist_idx", "images": folder / "images.idx.gz", "labels": folder / "labels.idx"},
        "image_folder": {"type": "image_folder", "root": pictures, "mode": "grayscale"},
        "csv": {"type": "csv", "path": folder / "table.csv", "label": "label"},
    }


def peak_over_data(params: dict) -> float:
    """The growth of a fresh process's peak memory while it builds the dataset, over the float32 bytes of its x."""
    kind, rest = params["type"], {k: str(v) if isinstance(v, Path) else v for k, v in params.items() if k != "type"}
    done = subprocess.run([sys.executable, "-c", BUILD, kind, json.dumps(rest)], capture_output=True, text=True, check=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return measured["grown"] / measured["x"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=4_000_000, help="numbers per dataset (images: 28x28 each)")
    parser.add_argument("--columns", type=int, default=20, help="feature columns of the CSV file (beside a label column)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        files = write_files(Path(folder), args.values, args.columns)
        print(f"peak memory while building, over the float32 size of x (about {args.values * 4 / 2**20:.0f} MiB)")
        for name, params in files.items():
            plain = peak_over_data(params)
            standardised = peak_over_data({**params, "transforms": [{"type": "standardise"}]})
            print(f"{name:13s} {plain:5.1f}x   with standardise {standardised:5.1f}x")


if __name__ == "__main__":
    main()
