"""Graph builtins: what a call may compute besides components and values."""

from __future__ import annotations

import torch

from compose_gen.runtime import build
from compose_gen.spec import load_spec


def test_one_hot_labels_condition_a_flow_on_the_class() -> None:
    """A class-conditional MAF on digits: p(x | y) with the context one_hot(y, 10)."""
    spec = {
        "name": "conditional_maf",
        "data": {"type": "digits", "shape": "flat"},
        "components": {
            "flow": {
                "type": "flow",
                "base": {"type": "standard_normal", "shape": [64]},
                "bijectors": [{"type": "maf", "shape": [64], "hidden": [16], "context_features": 10}],
            }
        },
        "graph": {"c": "one_hot(y, 10)"},
        "losses": {"nll": {"type": "flow_nll", "flow": "flow", "context": "c"}},
    }
    model, data = build(load_spec(spec), "cpu")
    batch = data.train.batch(slice(0, 4))
    context = model.values(batch, ["c"])["c"]
    assert context.shape == (4, 10) and torch.equal(context.argmax(-1), batch["y"]) and torch.equal(context.sum(-1), torch.ones(4))
    flow = model.component("flow")
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))  # the made layers start at the identity: perturb so the context matters
        other = torch.nn.functional.one_hot((batch["y"] + 1) % 10, 10).float()
        assert not torch.allclose(flow.log_prob(batch["x"], context), flow.log_prob(batch["x"], other))
