"""The Builder: building a declaration again as a copy of a repeated block."""

from __future__ import annotations

import torch

from compose_gen.compiler.build import SEED_STRIDE, Builder
from compose_gen.spec import load_spec


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
