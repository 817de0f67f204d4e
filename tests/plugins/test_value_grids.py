"""``value_grid`` and ``GenerativeModel.values``: the rows are the named graph values of the same test examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from compose_gen import make_catalogue
from compose_gen.compiler import compile_spec
from compose_gen.compiler.build import BuildContext
from compose_gen.core import EvalContext
from compose_gen.spec import load_spec
from compose_gen_plugins import value_grids

SPEC = {
    "name": "grid_tiny",
    "device": "cpu",
    "data": {"type": "digits", "shape": "image"},
    "components": {"g": {"type": "conv_translator", "base_channels": 4, "blocks": 0, "norm": "none", "output": "sigmoid"}},
    "graph": {"gx": "g(x)", "ggx": "g(gx)", "unused": "g(x)"},
    "losses": {"rec": {"type": "cycle_consistency", "real": "x", "reconstructed": "ggx"}},
    "evaluate": {"metrics": [{"type": "value_grid", "values": ["x", "gx", "ggx"], "n": 3, "file": "rows.png"}]},
}


@pytest.fixture(scope="module")
def model():
    spec = load_spec(SPEC, catalogue=make_catalogue([value_grids], entry_points=True))
    return compile_spec(spec, BuildContext(spec, None).make(spec.sections.data))


def test_values_compute_the_named_values_and_only_their_ancestors(model):
    x = torch.rand(2, 1, 8, 8)
    calls = []
    hook = model.component("g").register_forward_hook(lambda *args: calls.append(1))
    try:
        got = model.values({"x": x}, ["ggx", "x"])
    finally:
        hook.remove()
    g = model.component("g")
    torch.testing.assert_close(got["ggx"], g(g(x)).detach())
    assert got["x"] is x and len(calls) == 2 and not got["ggx"].requires_grad  # `unused` was not computed
    with pytest.raises(KeyError, match="unknown graph value"):
        model.values({"x": x}, ["gxx"])


def test_value_grid_tiles_each_value_as_one_row(model, tmp_path):
    data = BuildContext(model.spec, None).make(model.spec.sections.data)
    ctx = EvalContext(model=model, data=data, device=torch.device("cpu"), out_dir=tmp_path)
    assert model.metrics[0](ctx) == {"rows_images": 9.0}
    picture = np.asarray(Image.open(tmp_path / "rows.png"), dtype=np.float64) / 255
    scale, pad, size = 4, 1, 8
    first = data.test.fields["x"][:3]
    expected = model.values({"x": first}, ["x", "gx", "ggx"])
    for row, name in enumerate(["x", "gx", "ggx"]):
        for col in range(3):
            top, left = (pad + row * (size + pad)) * scale, (pad + col * (size + pad)) * scale
            tile = picture[top : top + size * scale : scale, left : left + size * scale : scale]
            shown = data.test.to_display(expected[name][col]).reshape(size, size).numpy()
            np.testing.assert_allclose(tile, shown, atol=1 / 255)
