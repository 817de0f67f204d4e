"""own_modes: compose_gen's float32, gradients and no autocast inside; the caller's modes back after, even on an error."""

from __future__ import annotations

import pytest
import torch

from compose_gen.core.modes import own_modes


def test_inside_its_own_modes_outside_the_caller_s_again_even_after_an_error() -> None:
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
            with pytest.raises(ValueError), own_modes("cpu"):
                weight = torch.randn(3, 3, requires_grad=True)
                product = weight @ weight
                assert torch.get_default_dtype() == torch.float32 and product.dtype == torch.float32 and product.requires_grad
                raise ValueError("a plugin's bug")
            assert torch.is_autocast_enabled("cpu") and not torch.is_grad_enabled()
            with own_modes("cpu", grad=False):
                assert not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(default)


def test_inference_mode_is_refused_where_gradients_are_needed() -> None:
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match="inside torch.inference_mode"), own_modes("cpu"):
            pass
        with own_modes("cpu", grad=False):
            assert torch.is_inference_mode_enabled()
