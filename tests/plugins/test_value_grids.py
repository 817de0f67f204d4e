"""``value_grid`` and ``GenerativeModel.values``: the rows are the named graph values of the same test examples."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from compose_gen import make_catalogue
from compose_gen.compiler import compile_spec
from compose_gen.compiler.build import build_data
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
    return compile_spec(spec, build_data(spec))


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
    data = build_data(model.spec)
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


def test_noise_interpolation_draws_the_generator_along_the_path(tmp_path) -> None:
    """Each row starts and ends at G of two noise draws; the middle follows the path."""
    import numpy as np
    from PIL import Image

    from compose_gen import EvalContext, Splits, TensorData
    from compose_gen_plugins.distributions import StandardNormal
    from compose_gen_plugins.value_grids import NoiseInterpolation, NoiseInterpolationParams

    class Tile(torch.nn.Module):  # G(z) = sigmoid(mean z) everywhere: brightness tracks the path
        def forward(self, z):
            return torch.sigmoid(z.mean(-1)).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2)

    data = TensorData({"x": torch.zeros(4, 1, 2, 2)}, image_shape=(1, 2, 2))
    params = NoiseInterpolationParams(noise="noise", generator="g", pairs=2, steps=5, mode="linear")
    metric = NoiseInterpolation(StandardNormal((3,)), Tile(), params)
    ctx = EvalContext(model=None, data=Splits(data, data), device=torch.device("cpu"), out_dir=tmp_path)
    assert metric(ctx) == {"interpolation_linear_images": 10.0}
    picture = Image.open(tmp_path / "interpolation_linear.png")
    assert picture.size[0] > picture.size[1]  # 5 columns, 2 rows
    torch.manual_seed(ctx.seed)
    z = StandardNormal((3,)).sample(4)  # the draws the metric made: row 0 goes z0 -> z1
    pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32)) / 255

    def tile(row: int, column: int) -> float:  # save_grid: 1-pixel padding, 2x2 tiles, scaled 4x
        return float(pixels[(1 + row * 3) * 4, (1 + column * 3) * 4])

    for column, t in ((0, 0.0), (2, 0.5), (4, 1.0)):
        expected = torch.sigmoid(((1 - t) * z[0] + t * z[1]).mean())
        assert abs(tile(0, column) - float(expected)) <= 1 / 255


def test_noise_interpolation_keeps_one_label_along_each_row_of_a_conditional_generator(tmp_path) -> None:
    from compose_gen import EvalContext, Splits, TensorData
    from compose_gen_plugins.distributions import StandardNormal
    from compose_gen_plugins.value_grids import NoiseInterpolation, NoiseInterpolationParams

    seen: list[torch.Tensor] = []

    class Labelled(torch.nn.Module):  # G(z, y): records the labels, draws grey tiles
        def forward(self, z, y):
            seen.append(y)
            return torch.full((len(z), 1, 2, 2), 0.5)

    data = TensorData({"x": torch.zeros(4, 1, 2, 2)}, image_shape=(1, 2, 2))
    params = NoiseInterpolationParams(noise="noise", generator="g", pairs=3, steps=4, classes=2)
    ctx = EvalContext(model=None, data=Splits(data, data), device=torch.device("cpu"), out_dir=tmp_path)
    NoiseInterpolation(StandardNormal((3,)), Labelled(), params)(ctx)
    assert seen[0].tolist() == [0] * 4 + [1] * 4 + [0] * 4


def test_noise_interpolation_conditions_each_row_on_the_graph_value_made_from_its_label(tmp_path) -> None:
    """``condition: c`` with ``c: one_hot(y, 10)``: row r's generator input is one_hot(r mod classes) all along."""
    from compose_gen import EvalContext
    from compose_gen.runtime import build

    shipped = pathlib.Path(__file__).resolve().parents[2] / "specs" / "cgan_digits.yaml"
    overrides = [
        "graph.c=one_hot(y, 10)",
        "graph.fake=generator(z, c)",
        "components.generator={type: conv_generator, latent_dim: 32, context_features: 10, base_channels: 8, output: sigmoid}",
        "sample.condition=c",
        "evaluate.metrics=[{type: noise_interpolation, noise: noise, generator: generator, pairs: 3, steps: 4, classes: 2, condition: c}]",
    ]
    model, data = build(load_spec(shipped, overrides), "cpu")
    seen = []
    model.component("generator").register_forward_hook(lambda module, args, out: seen.append(args[1]))
    (metric,) = model.metrics
    metric(EvalContext(model=model, data=data, device=torch.device("cpu"), out_dir=tmp_path))
    expected = torch.nn.functional.one_hot(torch.tensor([0, 1, 0]).repeat_interleave(4), 10).float()
    assert torch.equal(seen[-1], expected) and (tmp_path / "interpolation_spherical.png").exists()


def test_noise_interpolation_on_data_that_are_not_images_is_refused_by_validate() -> None:
    from compose_gen.runtime import build
    from compose_gen.spec import SpecError

    shipped = pathlib.Path(__file__).resolve().parents[2] / "specs" / "wgan_gp_8gaussians.yaml"
    spec = load_spec(shipped, ["evaluate.metrics=[{type: noise_interpolation, noise: noise, generator: generator}]"])
    with pytest.raises(SpecError, match=r"evaluate.metrics\[0\]: .*noise_interpolation draws an image grid, and the data are not images"):
        build(spec, "cpu")


def test_value_grid_on_data_that_are_not_images_is_refused_by_validate() -> None:
    from compose_gen.runtime import build
    from compose_gen.spec import SpecError

    shipped = pathlib.Path(__file__).resolve().parents[2] / "specs" / "wgan_gp_8gaussians.yaml"
    spec = load_spec(shipped, ["evaluate.metrics=[{type: value_grid, values: [x]}]"])
    with pytest.raises(SpecError, match=r"evaluate.metrics\[0\]: .*value_grid: the data are not images"):
        build(spec, "cpu")


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        ('{type: value_grid, values: [x, decoded]}', r"reads 'decoded', an Independent, not a batch of images of shape \(1, 8, 8\)"),
        ('{type: value_grid, values: [x, z_p]}', r"reads 'z_p', a Tensor of shape \(\d+, 16\), not a batch of images of shape \(1, 8, 8\)"),
        ('{type: value_scatter, values: [z_p], display: false}', r"reads 'z_p', a Tensor of shape \(\d+, 16\), not a batch of 2D points"),
    ],
    ids=["a distribution", "a latent as images", "a 16-D latent as points"],
)
def test_values_a_picture_cannot_show_are_refused_by_validate(metric: str, message: str) -> None:
    """The dry run computes every value a metric reads, so a value it cannot draw is found there, not after training."""
    from compose_gen.runtime import build
    from compose_gen.spec import SpecError

    shipped = pathlib.Path(__file__).resolve().parents[2] / "specs" / "vaegan_digits.yaml"
    with pytest.raises(SpecError, match=r"evaluate.metrics\[0\]: type 'value_(grid|scatter)' \(plugin 'value_grids'\) " + message):
        build(load_spec(shipped, [f"evaluate.metrics=[{metric}]"]), "cpu")


def test_value_scatter_draws_each_named_value_of_the_same_test_points(tmp_path, monkeypatch) -> None:
    """cyclegan_2d's a and G_ab(a) as drawn are the model's values of the first n test examples; a 1D value is refused."""
    from compose_gen.runtime import build
    from compose_gen.spec import SpecError

    shipped = pathlib.Path(__file__).resolve().parents[2] / "specs" / "cyclegan_2d.yaml"
    spec = load_spec(shipped, ["evaluate.metrics=[{type: value_scatter, values: [a, ab], n: 50}]", "graph.score=d_b(ab)"])
    model, data = build(spec, "cpu")
    drawn = {}
    monkeypatch.setattr(value_grids, "save_point_sets", lambda sets, path: drawn.update(sets) or path)
    ctx = EvalContext(model=model, data=data, device=torch.device("cpu"), out_dir=tmp_path)
    assert model.metrics[0](ctx) == {"values_points": 100.0}
    first = {"a": data.test.fields["a"][:50], "b": data.test.fields["b"][:50]}
    torch.testing.assert_close(drawn["a"], data.test.to_display(first["a"]))
    torch.testing.assert_close(drawn["ab"], data.test.to_display(model.values(first, ["ab"])["ab"]))
    model.metrics[0].names = ["a", "score"]
    with pytest.raises(ValueError, match=r"reads 'score', a Tensor of shape \(50, 1\), not a batch of 2D points"):
        model.metrics[0](ctx)
    images = load_spec(SPEC, ["evaluate.metrics=[{type: value_scatter, values: [x]}]"], catalogue=make_catalogue([value_grids], entry_points=True))
    with pytest.raises(SpecError, match=r"evaluate.metrics\[0\]: .*value_scatter: the data are images.*value_grid tiles images"):
        build(images, "cpu")


def test_value_scatter_draws_a_value_of_its_own_space_as_it_is(tmp_path, monkeypatch) -> None:
    """A 2D latent of 13-feature wine: display false draws it as it is; shown as the data are, it is refused by name."""
    from compose_gen.runtime import build
    from compose_gen.spec import SpecError

    spec = {
        "name": "wine_z",
        "data": {"type": "wine"},
        "components": {
            "prior": {"type": "standard_normal", "shape": [2]},
            "encoder": {"type": "gaussian_encoder", "latent": 2, "net": {"type": "mlp", "in_features": 13, "out_features": 4, "hidden": [8]}},
            "decoder": {"type": "gaussian_decoder", "net": {"type": "mlp", "in_features": 2, "out_features": 13, "hidden": [8]}},
        },
        "graph": {"q": "encoder(x)", "z": "q.mean()"},
        "losses": {"vae": {"type": "elbo", "encoder": "encoder", "decoder": "decoder", "prior": "prior"}},
        "evaluate": {"metrics": [{"type": "value_scatter", "values": ["z"], "n": 20, "display": False}]},
    }
    model, data = build(load_spec(spec), "cpu")
    drawn = {}
    monkeypatch.setattr(value_grids, "save_point_sets", lambda sets, path: drawn.update(sets) or path)
    ctx = EvalContext(model=model, data=data, device=torch.device("cpu"), out_dir=tmp_path)
    assert model.metrics[0](ctx) == {"values_points": 20.0}
    torch.testing.assert_close(drawn["z"], model.component("encoder")(data.test.fields["x"][:20]).mean)
    model.metrics[0].display = True
    with pytest.raises(ValueError, match="value 'z' is not in the data's space, so the data's display cannot show it: set display: false"):
        model.metrics[0](ctx)
    spec["evaluate"]["metrics"][0]["display"] = True  # and validate says so, not the evaluation after training
    with pytest.raises(SpecError, match="value 'z' is not in the data's space, so the data's display cannot show it: set display: false"):
        build(load_spec(spec), "cpu")


def test_a_noise_interpolation_of_more_images_than_a_picture_holds_is_refused_with_its_settings() -> None:
    """Else 10⁶ rows are drawn after the whole training, to fail on memory blamed on the generator."""
    from pydantic import ValidationError

    assert value_grids.NoiseInterpolationParams(noise="n", generator="g", pairs=100, steps=100).pairs == 100
    with pytest.raises(ValidationError, match="pairs × steps = 10000000 images; a picture holds at most 10,000"):
        value_grids.NoiseInterpolationParams(noise="n", generator="g", pairs=1_000_000, steps=10)
