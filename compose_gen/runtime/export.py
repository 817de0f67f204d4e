"""Samples written to files: an image grid or a 2D scatter plot (``.png``), or an array (``.npy``, ``.npz``).

The samples come in model space; each writer maps them to data space (``to_display``)
as the test split does, so the files show what the dataset's files hold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from compose_gen.compiler.checks import nonfinite_examples
from compose_gen.core import TensorData, class_columns, save_grid, save_scatter
from compose_gen.core.files import make_parent, replaced_atomically

__all__ = ["drawable", "non_finite_warning", "save_array", "write_samples"]


def drawable(test: TensorData) -> bool:
    """Whether samples of ``test``'s examples can be drawn: images, or 2D points."""
    return test.image_shape is not None or test.event_shape("x").numel() == 2


def non_finite_warning(x: Tensor, n: int, step: int) -> str | None:
    """The warning for the ``n`` samples ``x`` (drawn at training ``step``) that hold NaN or infinite values, or None."""
    broken = nonfinite_examples(x)
    if not broken:
        return None
    return (
        f"warning: {broken} of the {n} samples hold NaN or infinite values (written as they are): the model's sampling "
        f"direction breaks down at step {step} (in a flow, a bijector whose inverse leaves its domain, a sigmoid's "
        "logit, is a common cause)"
    )


def write_samples(path: str | Path, x: Tensor, n: int, labels: Tensor | None, test: TensorData, cycle: int | None) -> Path:
    """The ``n`` samples ``x`` (model space; ``labels`` their classes, when drawn by class) written to ``path`` by its suffix:
    an array (``.npy``, ``.npz``), else a grid of ``test``'s images (``cycle`` classes a row) or a scatter plot of 2D points."""
    if Path(path).suffix.lower() in (".npy", ".npz"):
        return save_array(Path(path), test.to_display(x), labels)
    if test.image_shape is not None:
        return save_grid(test.to_display(x).reshape(n, *test.image_shape), path, nrow=class_columns(n, cycle))
    if x[0].numel() == 2:
        reference = test.to_display(test.fields["x"]).reshape(-1, 2)
        names = [str(name) for name in test.meta.get("classes") or []]
        return save_scatter(test.to_display(x).reshape(n, 2), path, reference, labels=labels, class_names=names)
    raise ValueError(
        f"samples of event shape {tuple(x.shape[1:])} are neither images nor 2D points, so they cannot be drawn; "
        f"write them as an array instead: -o {Path(path).with_suffix('.npy').name} (or .npz; Run.sample() in Python)"
    )


def save_array(path: Path, x: Tensor, labels: Tensor | None) -> Path:
    """Samples as ``.npy`` (the array) or ``.npz`` (``x``, and the class ``y`` of each sample when drawn by class); a write
    that fails (a full disk) leaves the file there before as it was."""
    make_parent(path)
    array = x.detach().cpu().numpy()
    with replaced_atomically(path) as tmp, open(tmp, "wb") as handle:  # numpy would add its own lowercase suffix to a path named out.NPZ
        if path.suffix.lower() == ".npy":
            np.save(handle, array, allow_pickle=False)
        else:
            np.savez(handle, x=array, **({"y": labels.cpu().numpy()} if labels is not None else {}))
    return path
