"""The quality metrics run on CUDA when there is one (skipped without: the fixtures they need live here)."""

from __future__ import annotations

import pytest
import torch

from compose_gen.testing.doubles import FixedSampler
from compose_gen_plugins.quality.birthday import BirthdayParams, birthday_paradox
from compose_gen_plugins.quality.classifier import ClassifierParams
from compose_gen_plugins.quality.fidelity import FrechetParams, measure_frechet_distance
from compose_gen_plugins.quality.modes import ModeCoverageParams, mode_coverage


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_metrics_run_on_cuda(mixture_splits, image_splits, context):
    cuda = torch.device("cuda")
    on_modes = FixedSampler(mixture_splits.test.fields["x"], replace=False).to(cuda)
    coverage = mode_coverage(ModeCoverageParams(n=800), context(on_modes, mixture_splits, device=cuda))
    assert coverage["modes_covered"] == 8
    images = FixedSampler(image_splits.test.fields["x"], replace=False).to(cuda)
    tiny = ClassifierParams(width=4, feature_dim=8, epochs=8, batch_size=64, lr=3e-3)
    fd = measure_frechet_distance(FrechetParams(n=200, classifier=tiny), context(images, image_splits, device=cuda))
    assert fd["classifier_accuracy"] > 0.95
    collapsed = FixedSampler(image_splits.train.fields["x"][:20], noise=1e-4).to(cuda)
    result = birthday_paradox(BirthdayParams(s=50, batches=10), context(collapsed, image_splits, device=cuda))
    assert result["birthday_pass"] == 0.0
