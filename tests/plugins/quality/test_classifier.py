"""The dataset's feature classifier: accuracy, determinism, and its safetensors cache."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from compose_gen import Splits, TensorData
from compose_gen_plugins.quality import classifier as classifier_module
from compose_gen_plugins.quality.classifier import ClassifierParams, cache_dir, has_labels, load_classifier

TINY = ClassifierParams(width=4, feature_dim=8, epochs=8, batch_size=64, lr=3e-3)
CPU = torch.device("cpu")


def test_the_classifier_learns_the_classes_and_exposes_features_and_probabilities(image_splits):
    net, accuracy = load_classifier(image_splits, TINY, CPU)
    assert accuracy > 0.95
    x = image_splits.test.fields["x"][:5]
    assert net.features(x).shape == (5, 8)
    assert torch.allclose(net.probabilities(x).sum(-1), torch.ones(5))
    assert net.features(x.flatten(1)).equal(net.features(x))  # flat model-space examples work too


def test_an_mlp_classifier_serves_data_without_image_shape_and_trains_under_no_grad(mixture_splits):
    with torch.no_grad():  # as evaluation runs metrics
        net, accuracy = load_classifier(mixture_splits, TINY, CPU)
    assert accuracy > 0.95
    assert not any(isinstance(m, torch.nn.Conv2d) for m in net.modules())


def test_training_is_deterministic_for_a_seed(image_splits, classifier_cache, tmp_path, monkeypatch):
    first, _ = load_classifier(image_splits, TINY, CPU)
    monkeypatch.setenv(classifier_module.CACHE_ENV, str(tmp_path / "elsewhere"))
    second, _ = load_classifier(image_splits, TINY, CPU)
    other_seed, _ = load_classifier(image_splits, TINY.model_copy(update={"seed": 1}), CPU)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert not torch.equal(first.head.weight, other_seed.head.weight)


def test_the_cache_is_safetensors_keyed_by_data_and_settings(image_splits, classifier_cache, monkeypatch):
    net, accuracy = load_classifier(image_splits, TINY, CPU)
    (path,) = classifier_cache.glob("*.safetensors")
    assert cache_dir() == classifier_cache
    with safe_open(str(path), framework="pt") as handle:
        assert '"feature_dim": 8' in handle.metadata()["config"]
        assert set(handle.keys()) == set(net.state_dict())

    def no_training(*args, **kwargs):
        raise AssertionError("a cached classifier was retrained")

    monkeypatch.setattr(classifier_module, "_train", no_training)
    monkeypatch.setattr(classifier_module, "_last", None)  # as in a new process: from the file
    cached, cached_accuracy = load_classifier(image_splits, TINY, CPU)
    assert cached_accuracy == accuracy
    x = image_splits.test.fields["x"]
    assert torch.equal(cached.features(x), net.eval().features(x))

    changed = image_splits.train.fields["x"].clone()
    changed[0, 0, 0, 0] += 0.5
    other_train = TensorData({"x": changed, "y": image_splits.train.fields["y"]}, image_shape=(1, 6, 6))
    other_data = Splits(other_train, image_splits.test)
    with pytest.raises(AssertionError, match="retrained"):
        load_classifier(other_data, TINY, CPU)  # one changed pixel is another key


def test_a_corrupt_cache_file_is_retrained_over(image_splits, classifier_cache, monkeypatch):
    load_classifier(image_splits, TINY, CPU)
    (path,) = classifier_cache.glob("*.safetensors")
    path.write_bytes(b"not a safetensors file")
    monkeypatch.setattr(classifier_module, "_last", None)  # as in a new process: from the file
    with pytest.warns(UserWarning, match="ignoring cached classifier"):
        _, accuracy = load_classifier(image_splits, TINY, CPU)
    assert accuracy > 0.95
    with safe_open(str(path), framework="pt") as handle:
        assert handle.keys()


def test_unlabelled_data_is_a_clear_error_that_gives_no_metric_s_advice(image_splits):
    """The classifier does not know which metric asks; each metric refuses unlabelled data first, with its own remedy."""
    unlabelled = TensorData({"x": image_splits.train.fields["x"]}, image_shape=(1, 6, 6))
    with pytest.raises(ValueError, match=r"integer class labels in the train split's field 'y'; this dataset has none$"):
        load_classifier(Splits(unlabelled, unlabelled), TINY, CPU)
    one_hot = TensorData({"x": image_splits.train.fields["x"], "y": torch.eye(3)[image_splits.train.fields["y"]]})
    assert not has_labels(one_hot) and has_labels(image_splits.train)


def test_an_unwritable_cache_warns_and_still_serves_a_classifier(image_splits, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(classifier_module.CACHE_ENV, str(blocker))
    with pytest.warns(UserWarning, match="could not cache the classifier"):
        _, accuracy = load_classifier(image_splits, TINY, CPU)
    assert accuracy > 0.95


def test_the_metrics_of_one_evaluation_share_the_classifier_until_the_data_change(image_splits, classifier_cache, monkeypatch):
    """Each metric hashed the whole train split and scored the whole test split again (about 6 s per metric on MNIST-sized
    data); the same data give the same classifier and accuracy without either, and data changed in place are judged anew."""
    net, accuracy = load_classifier(image_splits, TINY, CPU)

    def no_hashing(*args, **kwargs):
        raise AssertionError("hashed the data again")

    monkeypatch.setattr(classifier_module, "_cache_key", no_hashing)
    again, same_accuracy = load_classifier(image_splits, TINY, CPU)
    assert again is net and same_accuracy == accuracy
    image_splits.test.fields["y"][0] += 0  # an in-place change, as far as torch can tell
    with pytest.raises(AssertionError, match="hashed the data again"):
        load_classifier(image_splits, TINY, CPU)


def test_data_made_under_inference_mode_get_their_classifier_without_the_memo(image_splits, classifier_cache):
    """Inference tensors keep no version counter, which the memo's key read."""

    def frozen(split: TensorData) -> TensorData:
        with torch.inference_mode():
            return TensorData({name: field.clone() for name, field in split.fields.items()}, image_shape=split.image_shape)

    data = Splits(frozen(image_splits.train), frozen(image_splits.test))
    _, accuracy = load_classifier(image_splits, TINY, CPU)
    with torch.inference_mode():
        assert load_classifier(data, TINY, CPU)[1] == accuracy
        assert load_classifier(data, TINY, CPU)[1] == accuracy
