"""Checks of what a user hands to Run.log_prob."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compose_gen.runtime.inputs import as_labels


def test_labels_are_whole_numbers_and_booleans_are_none() -> None:
    """Found by a tester of the docs: a mask such as ``y == 3`` was scored as classes 1 and 0, where ``sample`` refuses
    True as a class."""
    assert as_labels([0, 3]).tolist() == [0, 3]
    assert as_labels(np.array([2.0, 1.0])).tolist() == [2, 1]
    assert as_labels(torch.tensor([[1], [4]])).tolist() == [1, 4]
    for mask in ([True, False], np.array([True, False]), torch.tensor([0, 3]) == 3):
        with pytest.raises(ValueError, match=r"log_prob: the labels y are booleans, not class labels"):
            as_labels(mask)
