"""The Builder: building a declaration again as a copy of a repeated block; locating the warnings of a build."""

from __future__ import annotations

import warnings

import pytest
import torch

from compose_gen import ComponentType, Params, Splits, TensorData, make_catalogue
from compose_gen.compiler.build import SEED_STRIDE, Builder, build_data
from compose_gen.runtime import build
from compose_gen.spec import SpecError, SpecWarning, load_spec
from compose_gen.testing.plugins import plugin


def spec(**components):
    return load_spec({"name": "copies", "data": {"type": "moons", "n": 100}, "components": components})


def built(s) -> Builder:
    ctx = Builder(s, None)
    for name, declared in s.sections.components.items():  # declaration order puts inline components first
        ctx.built[name] = ctx.make(declared)
    return ctx


def test_a_copy_is_built_again_with_its_inline_components_and_shares_only_named_ones():
    torch.manual_seed(0)
    mlp = {"type": "mlp", "in_features": 3, "out_features": 4, "hidden": [5]}
    ctx = built(spec(shared=mlp, enc={"type": "gaussian_encoder", "latent": 2, "net": mlp}, enc2={"type": "gaussian_encoder", "latent": 2, "net": "shared"}))
    first, inline_net = ctx.built["enc"], ctx.built["enc.net"]
    assert ctx.rebuild("enc", 0) is first
    again = ctx.rebuild("enc", 1)
    assert type(again) is type(first) and again is not first
    new, old = dict(again.named_parameters()), dict(first.named_parameters())
    assert new.keys() == old.keys() and new
    assert all(new[k] is not old[k] and not torch.equal(new[k], old[k]) for k in new if k.endswith("weight")), "fresh initial values"
    assert ctx.built["enc"] is first and ctx.built["enc.net"] is inline_net, "the built components are left as they were"
    shared = {id(p) for p in ctx.built["shared"].parameters()}
    assert shared <= {id(p) for p in ctx.rebuild("enc2", 1).parameters()}, "a named component stays shared"


def test_a_copy_gets_a_seed_derived_from_its_index():
    ctx = built(spec(perm={"type": "random_permutation", "shape": [6], "seed": 3}))
    assert ctx.rebuild("perm", 0) is ctx.built["perm"]
    declared = ctx.spec.sections.components["perm"]
    assert declared.params.seed == 3, "the declaration is not changed"
    perms = [ctx.rebuild("perm", k).permutation.tolist() for k in range(4)]
    assert len({tuple(p) for p in perms}) == 4
    expected = Builder(ctx.spec, None).make(type(declared)(declared.name, declared.type, declared.params.model_copy(update={"seed": 3 + 2 * SEED_STRIDE}), declared.path))
    assert perms[2] == expected.permutation.tolist()


def test_a_plugin_warning_is_said_once_at_the_component_with_its_type_and_others_pass_through(install_plugin) -> None:
    """A plugin warns with ``SpecWarning`` in ``build``; the compiler locates it, and a repeated block's copies say it once."""
    install_plugin(
        "noisy",
        """
        import warnings
        from compose_gen import ComponentType, Params, SpecWarning, hookimpl

        class NoisyParams(Params):
            shape: list[int]

        def build_noisy(params, ctx):
            warnings.warn(SpecWarning("this bijector is only an example"))
            warnings.warn("a library's own warning", DeprecationWarning)
            return ctx.component("id")

        @hookimpl
        def compose_gen_types():
            return [ComponentType("noisy", "bijector", NoisyParams, build_noisy)]
        """,
    )
    s = load_spec(
        {
            "name": "copies",
            "data": {"type": "moons", "n": 100},
            "components": {"id": {"type": "reverse", "shape": [2]}, "block": {"type": "noisy", "shape": [2]}},
        },
        catalogue=make_catalogue(),
    )
    ctx = Builder(s, None)
    ctx.built["id"] = ctx.make(s.sections.components["id"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for index in range(3):
            ctx.rebuild("block", index) if index else ctx.make(s.sections.components["block"])
    said = [w for w in caught if issubclass(w.category, SpecWarning)]
    assert [str(w.message) for w in said] == ["<dict>:1: components.block: type 'noisy' (plugin 'noisy'): this bijector is only an example"]
    assert said[0].message.path == ("components", "block")
    others = [w for w in caught if not issubclass(w.category, SpecWarning)]
    assert [(w.category, str(w.message), w.filename.endswith("noisy.py")) for w in others] == [(DeprecationWarning, "a library's own warning", True)] * 3


class HugeParams(Params):
    width: int


def test_a_size_torch_cannot_hold_is_refused_at_its_component_without_torch_s_cpp_backtrace(vae_spec) -> None:
    """A plugin's unbounded size (the built-in ones are a compose_gen.Size) reaches torch, whose error names its C++ frames."""
    huge = ComponentType("huge_mlp", "network", HugeParams, lambda p, ctx: torch.nn.Linear(16, p.width))
    catalogue = make_catalogue([plugin(huge, name="huge")])
    vae_spec["components"]["decoder"]["net"] = {"type": "huge_mlp", "width": 2**63}
    with pytest.raises(SpecError) as caught:
        build(load_spec(vae_spec, catalogue=catalogue), "cpu")
    message = str(caught.value)
    assert "components.decoder.net: type 'huge_mlp' (plugin 'huge') failed to build: " in message
    assert "Overflow when unpacking long long" in message and "frame #" not in message


def test_a_caller_s_default_dtype_does_not_reach_a_dataset_plugin() -> None:
    """A plugin drawing its data with torch.randn (no dtype) under a caller's float64 default was refused for float64 x."""
    def blobs(p: Params, ctx: object) -> Splits:
        return Splits(TensorData({"x": torch.randn(20, 2)}), TensorData({"x": torch.randn(10, 2)}))

    catalogue = make_catalogue([plugin(ComponentType("blobs", "dataset", Params, blobs), name="blobbing")], entry_points=False)
    spec = load_spec({"name": "blobs", "data": {"type": "blobs"}}, catalogue=catalogue)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        data = build_data(spec)
    finally:
        torch.set_default_dtype(default)
    assert data.train.fields["x"].dtype == torch.float32


class WidthsParams(Params):
    widths: list[int] = [4]


def test_a_build_that_changes_its_parameters_leaves_the_spec_as_written() -> None:
    """A plugin appending to the list it was given changed the declaration, which a run folder's spec.yaml records: a
    resume then built another model and refused every checkpoint."""
    def appending(p: WidthsParams, ctx: object) -> torch.nn.Module:
        p.widths.append(3)
        return torch.nn.Linear(2, p.widths[-1])

    catalogue = make_catalogue([plugin(ComponentType("appending", "network", WidthsParams, appending), name="appends")])
    s = load_spec({"name": "t", "data": {"type": "moons", "n": 100}, "components": {"net": {"type": "appending"}}}, catalogue=catalogue)
    for _ in range(2):
        assert built(s).built["net"].out_features == 3
        assert s.sections.components["net"].params.widths == [4]
