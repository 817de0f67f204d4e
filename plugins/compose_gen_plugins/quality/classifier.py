"""A feature classifier trained on the dataset itself: this package's stand-in for Inception.

FID and the Inception score (Heusel et al. 2017; Salimans et al. 2016) read a
network pretrained on ImageNet; with no downloads allowed, a small classifier is
trained on the dataset's own labelled train split instead (a conv net for
images, an MLP otherwise), deterministically from a seed.  Its penultimate
activations are the features and its softmax the class probabilities.

Trained weights are cached as safetensors (never pickle) under
``$COMPOSE_GEN_CACHE_DIR/classifiers`` (default ``~/.cache/compose_gen/classifiers``),
keyed by a SHA-256 of the training data, the architecture and the training settings.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from typing import Any
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from compose_gen import Params, Seed, Splits, TensorData
from compose_gen.core import make_parent, replaced_atomically

__all__ = ["CACHE_ENV", "ClassifierParams", "FeatureClassifier", "cache_dir", "has_labels", "load_classifier"]

#: Environment variable naming compose_gen's cache root.
CACHE_ENV = "COMPOSE_GEN_CACHE_DIR"
#: Bumped whenever the architecture or training code changes, to invalidate old cache entries.
_FORMAT_VERSION = 1


class ClassifierParams(Params):
    """The feature classifier: architecture and training settings (all part of its cache key)."""

    width: int = Field(32, ge=1, description="channels of the first conv layer; the MLP's hidden width is 4x")
    feature_dim: int = Field(64, ge=1, description="size of the penultimate features")
    epochs: int = Field(30, ge=1, description="training epochs over the labelled train split")
    batch_size: int = Field(128, ge=1, description="training batch size")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    seed: Seed = Field(0, description="seed of the initialisation and the batch order")


class FeatureClassifier(nn.Module):
    """Standardise, a trunk to ``feature_dim`` ReLU features, then a linear head to class logits.

    Images ``(C, H, W)``: three 3×3 convolutions (the last two with stride 2),
    ReLU, a 2×2 adaptive average pool; other inputs: a two-layer MLP.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int, feature_dim: int) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.register_buffer("shift", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))
        if len(self.input_shape) == 3:
            w = width
            body: list[nn.Module] = [
                nn.Conv2d(self.input_shape[0], w, 3, padding=1), nn.ReLU(),
                nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16 * w, feature_dim),
            ]  # fmt: skip
        else:
            hidden = 4 * width
            body = [
                nn.Flatten(), nn.Linear(math.prod(self.input_shape), hidden), nn.ReLU(),
                nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, feature_dim),
            ]  # fmt: skip
        self.trunk = nn.Sequential(*body, nn.ReLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations ``[n, feature_dim]`` of model-space examples ``x``."""
        x = x.reshape(len(x), *self.input_shape).to(self.shift.dtype)
        return self.trunk((x - self.shift) / self.scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def probabilities(self, x: Tensor) -> Tensor:
        return self.forward(x).softmax(-1)


def cache_dir() -> Path:
    """Where trained classifiers are cached: ``$COMPOSE_GEN_CACHE_DIR/classifiers`` or ``~/.cache/...``."""
    root = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "compose_gen"
    return Path(root) / "classifiers"


def load_classifier(
    data: Splits, params: ClassifierParams, device: torch.device
) -> tuple[FeatureClassifier, float | None]:
    """The classifier for ``data`` (from the cache, else trained and cached) and its test accuracy.

    The accuracy is ``None`` when the test split has no labels.  The metrics of one evaluation
    share the last one loaded, rather than each hashing the train split and scoring the test split again.
    """
    global _last
    tensors = (*data.train.fields.values(), *data.test.fields.values())
    versions = None if any(t.is_inference() for t in tensors) else tuple((id(t), t._version) for t in tensors)  # inference tensors keep none
    seen = (str(cache_dir()), str(device), params.model_dump_json(), data.train.image_shape, versions)
    if versions is not None and _last is not None and _last[0] == seen:
        return _last[2], _last[3]
    x, y, num_classes = _labelled(data.train, "train")
    input_shape = tuple(data.train.image_shape or x.shape[1:])
    config = {
        "version": _FORMAT_VERSION,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        **params.model_dump(),
    }
    key = _cache_key(config, x, y)
    path = cache_dir() / f"{key}.safetensors"
    net = _load(path, config, device)
    if net is None:
        net = _train(x, y, config, params, device)
        try:
            _save(net, path, config)
        except OSError as error:  # an unwritable cache costs a retraining next time, not the evaluation
            warnings.warn(f"could not cache the classifier in {path.parent}: {error}", stacklevel=2)
    net.eval()
    accuracy = _accuracy(net, data.test, device)
    _last = (seen, tensors, net, accuracy)
    return net, accuracy


#: The last classifier :func:`load_classifier` gave, keyed on the cache, the device, the settings, the image shape and the identity
#: and version of every field of the data (which also fix the class count); the fields themselves are held, so that no other tensor
#: takes their ids while the entry stands.  Writes that bypass autograd's version counter (through ``.numpy()`` or ``.data``) are
#: not seen: build the data anew to change them.
_last: tuple[tuple[Any, ...], tuple[Tensor, ...], FeatureClassifier, float | None] | None = None


def has_labels(split: TensorData) -> bool:
    """Whether ``split`` has what the classifier is trained on: integer class labels, one per example, in ``y``."""
    y = split.fields.get("y")
    return y is not None and y.ndim == 1 and not y.is_floating_point()


def _labelled(split: TensorData, name: str) -> tuple[Tensor, Tensor, int]:
    # the metrics refuse unlabelled data first, each saying what to do instead; this guards direct calls
    if not has_labels(split):
        raise ValueError(f"the feature classifier needs integer class labels in the {name} split's field 'y'; this dataset has none")
    return split.fields["x"], split.fields["y"].long(), split.classes()


def _cache_key(config: dict, *tensors: Tensor) -> str:
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for tensor in tensors:
        flat = tensor.detach().cpu().contiguous().flatten()
        digest.update(f"{flat.dtype}{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy())  # hashed in place, no byte copy
    return digest.hexdigest()[:32]


def _build(config: dict) -> FeatureClassifier:
    shape, classes = tuple(config["input_shape"]), config["num_classes"]
    return FeatureClassifier(shape, classes, config["width"], config["feature_dim"])


@torch.enable_grad()  # metrics run under no_grad; training the classifier needs gradients
def _train(
    x: Tensor, y: Tensor, config: dict, params: ClassifierParams, device: torch.device
) -> FeatureClassifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        net = _build(config)
    x = x.to(device=device, dtype=torch.float32)
    y = y.to(device)
    net.shift.fill_(float(x.mean()))
    net.scale.fill_(max(float(x.std()), 1e-8))
    net.to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=params.lr)
    order = torch.Generator().manual_seed(params.seed)
    for _ in range(params.epochs):
        for index in torch.randperm(len(x), generator=order).split(params.batch_size):
            index = index.to(device)
            loss = F.cross_entropy(net(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return net


def _save(net: FeatureClassifier, path: Path, config: dict) -> None:
    """The classifier's weights and ``config`` to ``path``, through a fsynced temporary file: a reader or a crash never
    meets half a file."""
    make_parent(path)
    tensors = {name: t.detach().cpu().contiguous() for name, t in net.state_dict().items()}
    with replaced_atomically(path) as temporary:
        save_file(tensors, str(temporary), metadata={"config": json.dumps(config, sort_keys=True)})


def _load(path: Path, config: dict, device: torch.device) -> FeatureClassifier | None:
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            stored = json.loads((handle.metadata() or {}).get("config", "null"))
        if stored != json.loads(json.dumps(config, sort_keys=True)):
            raise ValueError("its stored configuration differs from the requested one")
        net = _build(config)
        net.load_state_dict(load_file(str(path)))
    except Exception as error:  # a corrupt or foreign file is retrained over, never trusted
        warnings.warn(f"ignoring cached classifier {path}: {error}; retraining", stacklevel=3)
        return None
    return net.to(device)


@torch.no_grad()
def _accuracy(net: FeatureClassifier, split: TensorData, device: torch.device) -> float | None:
    if not has_labels(split) or len(split) == 0:
        return None
    x, y = split.fields["x"], split.fields["y"]
    correct = sum(
        int((net(xb.to(device)).argmax(-1) == yb.to(device)).sum())
        for xb, yb in zip(x.split(1024), y.split(1024), strict=True)
    )
    return correct / len(y)
