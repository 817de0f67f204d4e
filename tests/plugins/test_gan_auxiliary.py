"""The adversarial losses' companions (gradient penalties, R1, feature matching, AC-GAN, cycle and identity) against
hand-computed values and direct autograd."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import compose_gen as cg
from compose_gen.runtime import build as build_spec
from compose_gen.spec import SpecError
from gan_losses import BOTH, Recorder, ScoreIsInput, build, mean

# --- gradient penalties ------------------------------------------------------------------


@pytest.mark.parametrize("penalty", ["gradient_penalty", "r1_penalty"])
def test_a_penalty_refuses_a_batch_norm_critic(penalty: str) -> None:
    """With batch norm D(x_i) reads the whole batch, so a per-example gradient penalty is not what it claims."""
    fake = {"fake": "f"} if penalty == "gradient_penalty" else {}  # R1 is on real data alone
    with pytest.raises(ValueError, match=f"{penalty} penalises each example's gradient, but the critic has batch norm"):
        build(penalty, nn.Sequential(nn.Linear(1, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)), **fake)
    build(penalty, nn.Sequential(nn.Linear(1, 4), nn.LayerNorm(4), nn.Linear(4, 1)), **fake)


def small_critic() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def test_gradient_penalty_equals_direct_autograd() -> None:
    critic = small_critic()
    real, fake = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    loss = build("gradient_penalty", critic, fake="f", weight=10.0)
    torch.manual_seed(7)
    out = loss({"real": real, "fake": fake}, frozenset({"critic"}))
    torch.manual_seed(7)
    alpha = torch.rand(5, dtype=torch.float64).unsqueeze(-1)
    points = (alpha * real + (1 - alpha) * fake).requires_grad_()
    (grad,) = torch.autograd.grad(critic(points).sum(), points, create_graph=True)
    expected = 10.0 * ((grad.norm(dim=1) - 1) ** 2).mean()
    assert out["critic"].item() == pytest.approx(expected.item(), rel=1e-12)
    assert out["grad_norm"].item() == pytest.approx(grad.norm(dim=1).mean().item(), rel=1e-12)
    # and its gradient in the critic's parameters is the direct one (double backprop; the last
    # bias does not change ∇D, so it gets none)
    params = list(critic.parameters())[:-1]
    ours = torch.autograd.grad(out["critic"], params)
    direct = torch.autograd.grad(expected, params)
    for a, b in zip(ours, direct, strict=True):
        torch.testing.assert_close(a, b)


def test_gradient_penalty_of_a_linear_critic_is_analytic() -> None:
    """D(x) = w·x has ∇D = w everywhere: GP = λ (‖w‖ - 1)², ∂GP/∂w = 2λ (‖w‖ - 1) w / ‖w‖."""
    critic = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 4.0]]))
    loss = build("gradient_penalty", critic, fake="f", weight=2.0)
    real, fake = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    out = loss({"real": real, "fake": fake}, {"critic"})
    assert out["critic"].item() == pytest.approx(2.0 * 16.0)
    out["critic"].backward()
    assert critic.weight.grad[0].tolist() == pytest.approx([2 * 2.0 * 4.0 * 3 / 5, 2 * 2.0 * 4.0 * 4 / 5])


@pytest.mark.parametrize("shape", [(2,), (1, 2, 2)])
def test_a_penalty_takes_the_gradient_of_the_score_the_losses_average(shape: tuple[int, ...]) -> None:
    """A critic of K outputs (or a patch map) scores an example by their mean, as the adversarial losses read it:
    D(x) = (1/K) Σ_k w_k·x has ∇D = mean_k w_k, so GP = λ (‖mean_k w_k‖ − 1)² and R1 = γ/2 ‖mean_k w_k‖²."""
    w = torch.tensor([[3.0, 0.0], [0.0, 4.0], [1.0, 2.0], [-2.0, 2.0]], dtype=torch.float64)[: math.prod(shape)]

    class Linear(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return (x @ w.T).reshape(len(x), *shape)

    gradient = w.mean(0).norm().item()
    real, fake = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    gp = build("gradient_penalty", Linear(), fake="f", weight=2.0)({"real": real, "fake": fake}, {"critic"})
    assert gp["critic"].item() == pytest.approx(2.0 * (gradient - 1) ** 2)
    assert gp["grad_norm"].item() == pytest.approx(gradient)
    r1 = build("r1_penalty", Linear(), gamma=4.0)({"real": real}, {"critic"})
    assert r1["critic"].item() == pytest.approx(2.0 * gradient**2)


def test_gradient_penalty_interpolates_every_input_of_a_joint_critic() -> None:
    """D(x, z) = ½‖x‖² + ½‖z‖²: ∇ = (x̂, ẑ), so GP = E (‖(x̂, ẑ)‖ - 1)², one α for both."""

    class Quadratic(nn.Module):
        def forward(self, x: Tensor, z: Tensor) -> Tensor:
            return 0.5 * (x.pow(2).sum(-1) + z.pow(2).sum(-1))

    x, z_hat, g, z = (torch.randn(6, d, dtype=torch.float64) for d in (3, 2, 3, 2))
    loss = build("gradient_penalty", Quadratic(), real=["x", "z_hat"], fake=["g", "z"], weight=1.0)
    torch.manual_seed(3)
    out = loss({"real": (x, z_hat), "fake": (g, z)}, {"critic"})
    torch.manual_seed(3)
    alpha = torch.rand(6, dtype=torch.float64).unsqueeze(-1)
    joint = torch.cat([alpha * x + (1 - alpha) * g, alpha * z_hat + (1 - alpha) * z], dim=1)
    assert out["critic"].item() == pytest.approx(((joint.norm(dim=1) - 1) ** 2).mean().item(), rel=1e-12)


def test_gradient_penalty_interpolates_a_lower_precision_fake_in_the_real_data_precision() -> None:
    """Under autocast the generator hands on bf16 fakes: x̂ = α x + (1 − α) g is taken in x's float32."""

    class Quadratic(nn.Module):  # D(x) = ½‖x‖², ∇D(x̂) = x̂
        def forward(self, x: Tensor) -> Tensor:
            assert x.dtype == torch.float32
            return 0.5 * x.pow(2).sum(-1)

    x, g = torch.randn(6, 3), torch.randn(6, 3).to(torch.bfloat16)
    torch.manual_seed(5)
    out = build("gradient_penalty", Quadratic(), fake="f", weight=1.0)({"real": x, "fake": g}, {"critic"})
    torch.manual_seed(5)
    alpha = torch.rand(6).unsqueeze(-1)
    expected = (((alpha * x + (1 - alpha) * g.float()).norm(dim=1) - 1) ** 2).mean()
    torch.testing.assert_close(out["critic"], expected)


def test_r1_penalty_is_half_gamma_squared_gradient_norm_on_real_data() -> None:
    class Quadratic(nn.Module):  # D(x) = ½‖x‖², ∇D(x) = x
        def forward(self, x: Tensor, y: Tensor) -> Tensor:
            assert y.dtype == torch.long
            return 0.5 * x.pow(2).sum(-1)

    x = torch.randn(7, 3, dtype=torch.float64)
    loss = build("r1_penalty", Quadratic(), gamma=4.0, labels="y")
    assert loss.inputs_for({"critic"}, ["real", "fake", "labels"]) == {"real", "labels"}
    out = loss({"real": x, "labels": torch.zeros(7, dtype=torch.long)}, {"critic"})
    assert out["critic"].item() == pytest.approx(2.0 * x.pow(2).sum(1).mean().item(), rel=1e-12)


def test_gradient_penalty_works_without_grad_mode() -> None:
    """Under no_grad (an evaluation) the penalty is the value training computes at the same points, without a graph."""
    loss = build("gradient_penalty", small_critic(), fake="f")
    inputs = {"real": torch.randn(3, 3, dtype=torch.float64), "fake": torch.randn(3, 3, dtype=torch.float64)}
    torch.manual_seed(7)
    with torch.no_grad():
        out = loss(inputs, {"critic"})
    torch.manual_seed(7)  # the same interpolation points
    trained = loss(inputs, {"critic"})
    assert not out["critic"].requires_grad and trained["critic"].requires_grad
    assert trained["critic"].item() > 0, "a penalty the comparison can see"
    assert out["critic"].item() == pytest.approx(trained["critic"].item(), rel=1e-12)
    assert out["grad_norm"].item() == pytest.approx(trained["grad_norm"].item(), rel=1e-12)


# --- feature matching, AC-GAN, cycle and identity ------------------------------------------


def test_feature_matching_is_squared_distance_of_mean_features() -> None:
    real = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    fake = torch.tensor([[0.0, 0.0], [1.0, 1.0]], requires_grad=True)
    loss = build("feature_matching", ScoreIsInput(), fake="f", weight=2.0)
    out = loss({"real": real, "fake": fake}, {"generator"})
    assert out["generator"].item() == pytest.approx(2.0 * ((2.0 - 0.5) ** 2 + (1.0 - 0.5) ** 2))
    out["generator"].backward()
    assert fake.grad is not None


def test_feature_matching_needs_critic_features() -> None:
    with pytest.raises(ValueError, match="features"):
        build("feature_matching", nn.Linear(2, 1), fake="f")


class FixedClasses(nn.Module):
    """Critic returning (score, class_logits) with the logits given as input."""

    def forward(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        return logits[:, :1], logits


def cross_entropy(logits: list[list[float]], labels: list[int]) -> float:
    return mean([math.log(sum(math.exp(v) for v in row)) - row[c] for row, c in zip(logits, labels, strict=True)])


def test_auxiliary_classifier_terms_are_cross_entropies() -> None:
    real_logits, fake_logits = [[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]], [[0.1, 0.2, 3.0], [1.0, 1.0, 1.0]]
    labels, fake_labels = [0, 2], [2, 1]
    loss = build("auxiliary_classifier", FixedClasses(), fake="f", fake_labels="c", weight=0.5)
    names = ["real", "fake", "labels", "fake_labels"]
    assert loss.inputs_for({"generator"}, names) == {"fake", "labels", "fake_labels"}
    out = loss(
        {
            "real": torch.tensor(real_logits, dtype=torch.float64),
            "fake": torch.tensor(fake_logits, dtype=torch.float64),
            "labels": torch.tensor(labels),
            "fake_labels": torch.tensor(fake_labels),
        },
        BOTH,
    )
    ce_real, ce_fake = cross_entropy(real_logits, labels), cross_entropy(fake_logits, fake_labels)
    assert out["critic"].item() == pytest.approx(0.5 * (ce_real + ce_fake), abs=1e-12)
    assert out["generator"].item() == pytest.approx(0.5 * ce_fake, abs=1e-12)
    assert out["accuracy_real"].item() == pytest.approx(0.5)  # row 2 predicts class 1, not 2
    assert out["accuracy_fake"].item() == pytest.approx(0.5)  # row 2 ties: argmax picks class 0


def test_auxiliary_classifier_gives_a_class_conditional_critic_its_labels() -> None:
    """A projection critic scores (x, y); its class head reads x alone, so it is called as the adversarial losses call it."""
    critic = Recorder()
    critic.num_classes = 3
    critic.forward = lambda *args: (Recorder.forward(critic, *args), args[0])  # (score, class logits)
    loss = build("auxiliary_classifier", critic, fake="f", fake_labels="c")
    x, g = torch.randn(2, 3), torch.randn(2, 3)
    y, c = torch.tensor([0, 2]), torch.tensor([1, 1])
    loss({"real": x, "fake": g, "labels": y, "fake_labels": c}, {"critic"})
    assert sorted(call[1].tolist() for call in critic.calls) == [[0, 2], [1, 1]]  # real's labels, fake's


def test_auxiliary_classifier_refuses_a_critic_that_reads_the_labels_it_classifies() -> None:
    critic = nn.Module()
    critic.conditioning = "concat"
    with pytest.raises(ValueError, match="reads the labels it would classify .* give it conditioning: projection"):
        build("auxiliary_classifier", critic, fake="f")


def test_auxiliary_classifier_rejects_a_critic_without_class_head() -> None:
    loss = build("auxiliary_classifier", ScoreIsInput(), fake="f")
    with pytest.raises(TypeError, match="ac_classes"):
        loss({"fake": torch.zeros(2, 1), "labels": torch.zeros(2, dtype=torch.long)}, {"generator"})


@pytest.mark.parametrize(
    ("type_name", "other", "norm", "expected"),
    [
        ("cycle_consistency", "reconstructed", "l1", 10.0 * mean([1.0, 0.5, 2.0, 0.0])),
        ("cycle_consistency", "reconstructed", "l2", 10.0 * mean([1.0, 0.25, 4.0, 0.0])),
        ("identity_mapping", "mapped", "l1", 5.0 * mean([1.0, 0.5, 2.0, 0.0])),
    ],
)
def test_cycle_and_identity_are_mean_distances(type_name: str, other: str, norm: str, expected: float) -> None:
    loss = build(type_name, real="a", norm=norm, **{other: "aba"})
    a = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    out = loss({"real": a, other: a + torch.tensor([[1.0, -0.5], [2.0, 0.0]])}, {"loss"})
    assert out["loss"].item() == pytest.approx(expected)




# --- real and fake must be shaped alike --------------------------------------------------------------


@pytest.mark.parametrize("name", ["gradient_penalty", "feature_matching", "auxiliary_classifier"])
def test_companion_losses_refuse_fakes_shaped_unlike_the_data(name: str) -> None:
    critic = {"auxiliary_classifier": FixedClasses(), "feature_matching": ScoreIsInput()}.get(name) or small_critic().float()
    loss = build(name, critic, real="x", fake="fake")
    terms = {"feature_matching": {"generator"}}.get(name, {"critic"})
    labels = {"labels": torch.zeros(4, dtype=torch.long)} if name == "auxiliary_classifier" else {}
    loss({"real": torch.randn(4, 3), "fake": torch.randn(4, 3), **labels}, terms)
    with pytest.raises(ValueError, match=r"fake 'fake' has examples of shape \(2,\) \(a batch \(4, 2\)\) but real 'x' has \(3,\)"):
        loss({"real": torch.randn(4, 3), "fake": torch.randn(4, 2), **labels}, terms)


def test_gradient_penalty_needs_as_many_fakes_as_real_examples() -> None:
    loss = build("gradient_penalty", small_critic(), fake="f")
    real, fake = torch.randn(4, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="same batch size: real has 4 examples, fake 6"):
        loss({"real": real, "fake": fake}, {"critic"})


@pytest.mark.parametrize(("type_name", "other"), [("cycle_consistency", "reconstructed"), ("identity_mapping", "mapped")])
def test_cycle_and_identity_refuse_shapes_that_would_broadcast(type_name: str, other: str) -> None:
    """(N, 1) against (N,) would broadcast to (N, N), comparing every example with every other."""
    loss = build(type_name, real="a", **{other: "aba"})
    with pytest.raises(ValueError, match=rf"{other} 'aba' has shape \(4, 1\) but real 'a' has \(4,\)"):
        loss({"real": torch.randn(4), other: torch.randn(4, 1)}, {"loss"})




def test_an_auxiliary_classifier_with_fewer_classes_than_the_labels_is_refused_at_build() -> None:
    spec = {
        "name": "acgan",
        "data": {"type": "eight_gaussians", "n": 200},
        "components": {
            "noise": {"type": "standard_normal", "shape": [2]},
            "generator": {"type": "mlp_generator", "latent_dim": 2, "hidden": [8], "num_classes": 8},
            "critic": {"type": "mlp_critic", "hidden": [8], "ac_classes": 5},
        },
        "graph": {"z": "noise.sample(x)", "fake": "generator(z, y)"},
        "losses": {
            "adv": {"type": "non_saturating", "critic": "critic", "real": "x", "fake": "fake"},
            "ac": {"type": "auxiliary_classifier", "critic": "critic", "fake": "fake"},
        },
        "players": {"critic": {"params": ["critic"], "terms": ["adv.critic", "ac.critic"]}, "generator": {"params": ["generator"], "terms": ["adv.generator", "ac.generator"]}},
    }
    with pytest.raises(SpecError, match=r"losses\.ac: .* the labels 'y' take 8 classes \(0\.\.7\), but critic 'critic' classifies 5 \(its ac_classes\); set `ac_classes: 8`"):
        build_spec(cg.load_spec(spec), "cpu")
    spec["components"]["critic"]["ac_classes"] = 8
    build_spec(cg.load_spec(spec), "cpu")
