"""Adversarial losses and their companions against hand-computed values and direct autograd."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch
from torch import Tensor, nn

import compose_gen as cg
from compose_gen import make_catalogue
from compose_gen.runtime import build as build_spec
from compose_gen.spec import SpecError, SpecWarning
from compose_gen_plugins import adversarial, gan_auxiliary

CATALOGUE = make_catalogue([adversarial, gan_auxiliary], entry_points=False)
REAL = [1.0, 3.0]
FAKE = [-2.0, 0.5]


class Context:
    def __init__(self, **components: nn.Module) -> None:
        self.components = components
        self.data = None

    def component(self, ref: str) -> nn.Module:
        return self.components[ref]


class ScoreIsInput(nn.Module):
    """D(x) = x (and features(x) = x): scores are whatever the test feeds in."""

    def forward(self, x: Tensor) -> Tensor:
        return x

    def features(self, x: Tensor) -> Tensor:
        return x


class Recorder(nn.Module):
    """Returns the sum of its first input's last dim and records every call's arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Tensor, ...]] = []

    def forward(self, *args: Tensor) -> Tensor:
        self.calls.append(args)
        return args[0].sum(-1, keepdim=True)


def build(type_name: str, critic: nn.Module | None = None, **params: object):
    component_type = CATALOGUE.get(type_name)
    spec = {"critic": "critic", **params} if critic is not None else params
    return component_type.build(component_type.params(**spec), Context(critic=critic))


def inputs(real: list[float] = REAL, fake: list[float] = FAKE, **extra: Tensor) -> dict[str, Tensor]:
    as_column = lambda v: torch.tensor(v, dtype=torch.float64).unsqueeze(-1)  # noqa: E731
    return {"real": as_column(real), "fake": as_column(fake), **extra}


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def log_sigmoid(d: float) -> float:
    return math.log(1.0 / (1.0 + math.exp(-d)))


def log_one_minus_sigmoid(d: float) -> float:
    return math.log(1.0 - 1.0 / (1.0 + math.exp(-d)))


BOTH = frozenset({"critic", "generator"})

EXPECTED = {
    # name: (params, critic term, generator term)
    "minimax": (
        {},
        -mean([log_sigmoid(d) for d in REAL]) - mean([log_one_minus_sigmoid(d) for d in FAKE]),
        mean([log_one_minus_sigmoid(d) for d in FAKE]),
    ),
    "non_saturating": (
        {},
        -mean([log_sigmoid(d) for d in REAL]) - mean([log_one_minus_sigmoid(d) for d in FAKE]),
        -mean([log_sigmoid(d) for d in FAKE]),
    ),
    "wasserstein": ({}, mean(FAKE) - mean(REAL), -mean(FAKE)),  # -0.75 - 2 = -2.75; 0.75
    "hinge": ({}, 0.0 + mean([0.0, 1.5]), 0.75),
    "least_squares": ({}, 0.5 * mean([0.0, 4.0]) + 0.5 * mean([4.0, 0.25]), 0.5 * mean([9.0, 0.25])),
    "non_saturating_smoothed": (
        {"label_smoothing": 0.1},
        -mean([0.9 * log_sigmoid(d) + 0.1 * log_one_minus_sigmoid(d) for d in REAL])
        - mean([log_one_minus_sigmoid(d) for d in FAKE]),
        -mean([log_sigmoid(d) for d in FAKE]),
    ),
    "least_squares_symmetric": (  # Mao et al.'s a = -1, b = 1, c = 0
        {"real_target": 1.0, "fake_target": -1.0, "generator_target": 0.0},
        0.5 * mean([0.0, 4.0]) + 0.5 * mean([1.0, 2.25]),
        0.5 * mean([4.0, 0.25]),
    ),
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_terms_equal_their_definitions(case: str) -> None:
    params, critic_term, generator_term = EXPECTED[case]
    loss = build(case.removesuffix("_smoothed").removesuffix("_symmetric"), ScoreIsInput(), fake="f", **params)
    out = loss(inputs(), BOTH)
    assert out["critic"].item() == pytest.approx(critic_term, abs=1e-12)
    assert out["generator"].item() == pytest.approx(generator_term, abs=1e-12)
    assert out["d_real"].item() == pytest.approx(mean(REAL))
    assert out["d_fake"].item() == pytest.approx(mean(FAKE))


def test_wasserstein_reports_the_critic_estimate() -> None:
    out = build("wasserstein", ScoreIsInput(), fake="f")(inputs(), BOTH)
    assert out["wasserstein"].item() == pytest.approx(mean(REAL) - mean(FAKE))


@pytest.mark.parametrize("name", ["minimax", "non_saturating", "wasserstein", "hinge", "least_squares"])
def test_generator_term_needs_no_real_value(name: str) -> None:
    loss = build(name, ScoreIsInput(), fake="f", labels="y")
    names = ["real", "fake", "labels"]
    assert loss.inputs_for({"generator"}, names) == {"fake", "labels"}
    assert loss.inputs_for({"critic"}, names) == set(names)
    only_fake = {"fake": inputs()["fake"]}
    assert set(build(name, ScoreIsInput(), fake="f")(only_fake, frozenset({"generator"}))) == {"generator", "d_fake"}


def test_generator_on_real_scores_real_pairs_as_fake() -> None:
    """BiGAN: with real = (x, E(x)) the encoder's term -log(1 - D(x, E(x))) joins the generator's."""
    loss = build("non_saturating", ScoreIsInput(), fake="f", generator_on_real=True)
    assert loss.inputs_for({"generator"}, ["real", "fake"]) == {"real", "fake"}
    out = loss(inputs(), frozenset({"generator"}))
    expected = -mean([log_sigmoid(d) for d in FAKE]) - mean([log_one_minus_sigmoid(d) for d in REAL])
    assert out["generator"].item() == pytest.approx(expected, abs=1e-12)


def test_joint_and_conditional_critics_get_all_their_inputs() -> None:
    critic = Recorder()
    loss = build("hinge", critic, real=["x", "z_hat"], fake=["g", "z"], labels="y", fake_labels="y_fake")
    x, z_hat, g, z = (torch.randn(3, 2) for _ in range(4))
    y, y_fake = torch.tensor([0, 1, 2]), torch.tensor([2, 2, 0])
    loss({"real": (x, z_hat), "fake": (g, z), "labels": y, "fake_labels": y_fake}, BOTH)
    fake_call, real_call = critic.calls
    assert all(a is b for a, b in zip(real_call, (x, z_hat, y), strict=True))
    assert all(a is b for a, b in zip(fake_call, (g, z, y_fake), strict=True))


def test_weight_clipping_clamps_after_critic_steps_only() -> None:
    critic = nn.Linear(3, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[0.5, -0.002, -3.0]]))
        critic.bias.fill_(0.2)
    loss = build("wasserstein", critic, fake="f", clip=0.01)
    loss.after_step(frozenset({"generator"}))
    assert critic.weight[0, 0].item() == 0.5
    loss.after_step(frozenset({"critic"}))
    assert critic.weight[0].tolist() == pytest.approx([0.01, -0.002, -0.01])
    assert critic.bias.item() == pytest.approx(0.01)


def test_instance_noise_has_its_std_and_decays_linearly() -> None:
    critic = Recorder()
    loss = build("wasserstein", critic, fake="f", instance_noise=0.5, noise_decay_steps=4)
    x = torch.zeros(20000, 1, dtype=torch.float64)
    loss({"real": x, "fake": x}, BOTH)
    for args in critic.calls:
        assert args[0].std().item() == pytest.approx(0.5, rel=0.03)
    for expected in (0.375, 0.25, 0.125, 0.0, 0.0):
        loss.after_step(frozenset({"critic"}))
        assert float(loss.noise_std()) == pytest.approx(expected)
    critic.calls.clear()
    loss({"real": x, "fake": x}, BOTH)
    assert all(args[0].abs().max().item() == 0 for args in critic.calls)
    loss.after_step(frozenset({"generator"}))
    assert int(loss.critic_steps) == 5, "only critic steps advance the schedule"
    assert "critic_steps" in loss.state_dict(), "the schedule survives a checkpoint"


def test_critic_is_referenced_not_owned() -> None:
    loss = build("hinge", nn.Linear(2, 1), fake="f")
    assert list(loss.parameters()) == []


def test_scores_of_an_auxiliary_classifier_critic_are_its_first_output() -> None:
    class WithClasses(nn.Module):
        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            return x, torch.zeros(len(x), 3)

    out = build("wasserstein", WithClasses(), fake="f")(inputs(), BOTH)
    assert out["critic"].item() == pytest.approx(mean(FAKE) - mean(REAL))


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError):
        CATALOGUE.get("non_saturating").params(critic="c", fake="f", label_smoothing=1.0)
    with pytest.raises(pydantic.ValidationError):
        CATALOGUE.get("wasserstein").params(critic="c", fake="f", clip=-0.01)
    with pytest.raises(pydantic.ValidationError):
        CATALOGUE.get("hinge").params(critic="c", fake="f", label_smoothing=0.1)
    with pytest.raises(pydantic.ValidationError, match="noise_decay_steps decays instance_noise, which is 0"):
        CATALOGUE.get("hinge").params(critic="c", fake="f", noise_decay_steps=100)  # a schedule for no noise


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
    with torch.no_grad():
        out = build("gradient_penalty", small_critic(), fake="f")(
            {"real": torch.randn(3, 3, dtype=torch.float64), "fake": torch.randn(3, 3, dtype=torch.float64)}, {"critic"}
        )
    assert torch.isfinite(out["critic"]) and not out["critic"].requires_grad


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


def test_every_type_is_a_loss() -> None:
    assert {t.name for t in CATALOGUE.of_kind("loss")} == {
        "minimax", "non_saturating", "wasserstein", "hinge", "least_squares", "gradient_penalty",
        "r1_penalty", "feature_matching", "auxiliary_classifier", "cycle_consistency", "identity_mapping",
    }  # fmt: skip
    assert all(t.doc for t in CATALOGUE.types.values())


ROUND_TRIP = {
    "cycle_consistency": {"real": "a", "reconstructed": "aba"},
    "identity_mapping": {"real": "b", "mapped": "bb"},
    "r1_penalty": {"critic": "d", "real": ["x", "z_hat"]},
}


@pytest.mark.parametrize("type_name", sorted(CATALOGUE.types))
def test_parameters_survive_a_dump_and_reload(type_name: str) -> None:
    """Run folders store the resolved spec with every default written out; it must load again."""
    model = CATALOGUE.get(type_name).params
    parsed = model(**ROUND_TRIP.get(type_name, {"critic": "d", "real": ["x", "z_hat"], "fake": ["g", "z"]}))
    assert model.model_validate(parsed.model_dump(mode="json")) == parsed


# --- real and fake must be shaped alike --------------------------------------------------------------


class FlatteningCritic(nn.Module):
    """Like a critic built for (1, 8, 8) examples that reshapes its input: a (N, 1, 16, 16) batch gives (N, 4) scores."""

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(-1, 64).mean(-1).reshape(len(x), -1)

    def features(self, x: Tensor) -> Tensor:
        return x.reshape(-1, 64)


ADVERSARIAL = ["minimax", "non_saturating", "wasserstein", "hinge", "least_squares"]


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_a_generator_output_not_shaped_like_the_data_is_refused_naming_both_shapes(name: str) -> None:
    loss = build(name, FlatteningCritic(), real="x", fake="fake")
    real, fake = torch.rand(5, 1, 8, 8), torch.rand(5, 1, 16, 16)
    loss({"real": real, "fake": torch.rand(5, 1, 8, 8)}, BOTH)
    with pytest.raises(ValueError) as error:
        loss({"real": real, "fake": fake}, BOTH)
    message = str(error.value)
    assert "fake 'fake' has examples of shape (1, 16, 16)" in message and "real 'x' has (1, 8, 8)" in message
    assert "generator's image_shape or out_shape to [1, 8, 8]" in message
    with pytest.raises(ValueError, match=r"\(63,\).*\(64,\)"):
        loss({"real": torch.rand(5, 64), "fake": torch.rand(5, 63)}, BOTH)
    # the generator's step reads no real value, so it has nothing to compare
    assert set(loss({"fake": fake}, frozenset({"generator"}))) == {"generator", "d_fake"}


def test_real_and_fake_may_differ_in_batch_size_but_not_in_their_inputs() -> None:
    loss = build("hinge", Recorder(), real=["x", "z_hat"], fake=["fake", "z"], generator_on_real=True)
    x, z = torch.randn(4, 3), torch.randn(4, 2)
    loss({"real": (x, z), "fake": (torch.randn(6, 3), torch.randn(6, 2))}, BOTH)
    with pytest.raises(ValueError) as error:
        loss({"real": (x, torch.randn(4, 6)), "fake": (torch.randn(4, 3), z)}, frozenset({"generator"}))
    message = str(error.value)
    assert "critic input 2 of 2" in message and "fake 'z' has examples of shape (2,)" in message and "real 'z_hat' has (6,)" in message
    assert "encoder's out_features" in message
    with pytest.raises(ValueError, match="in another order: list real and fake in the same order"):
        loss({"real": (x, z), "fake": (z, x)}, BOTH)
    with pytest.raises(ValueError, match=r"real has 2 critic input\(s\) \(x, z_hat\) but fake has 1"):
        loss({"real": (x, z), "fake": x}, BOTH)


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


def test_the_dry_run_blames_the_loss_for_a_generator_not_shaped_like_the_data() -> None:
    """A conv generator of 16x16 images on 8x8 digits, without a `sample:` section to compare with the data."""
    spec = {
        "name": "shapes",
        "data": {"type": "digits", "shape": "image"},
        "components": {
            "noise": {"type": "standard_normal", "shape": [4]},
            "G": {"type": "conv_generator", "latent_dim": 4, "image_shape": [1, 16, 16], "base_channels": 4},
            "D": {"type": "conv_critic", "base_channels": 4},
        },
        "graph": {"z": "noise.sample(x)", "fake": "G(z)"},
        "losses": {"adv": {"type": "non_saturating", "critic": "D", "fake": "fake"}},
        "players": {"d": {"params": ["D"], "terms": ["adv.critic"]}, "g": {"params": ["G"], "terms": ["adv.generator"]}},
        "train": {"steps": 1},
    }
    with pytest.raises(SpecError) as error:
        build_spec(cg.load_spec(spec), "cpu")
    message = str(error.value)
    assert "losses.adv" in message and "fake 'fake' has examples of shape (1, 16, 16)" in message
    assert "real 'x' has (1, 8, 8)" in message


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


def _wgan(critic: dict, adv: dict, extra_losses: dict | None = None) -> dict:
    losses = {"adv": {"type": "wasserstein", "critic": "critic", "real": "x", "fake": "fake", **adv}, **(extra_losses or {})}
    critic_terms = ["adv.critic", *(f"{name}.critic" for name in extra_losses or {})]
    return {
        "name": "wgan",
        "data": {"type": "eight_gaussians", "n": 200},
        "components": {
            "noise": {"type": "standard_normal", "shape": [2]},
            "generator": {"type": "mlp_generator", "latent_dim": 2, "hidden": [8]},
            "critic": {"type": "mlp_critic", "hidden": [8], **critic},
        },
        "graph": {"z": "noise.sample(x)", "fake": "generator(z)"},
        "losses": losses,
        "players": {"critic": {"params": ["critic"], "terms": critic_terms}, "generator": {"params": ["generator"], "terms": ["adv.generator"]}},
        "train": {"steps": 1},
    }


UNCONSTRAINED = r"losses\.adv: type 'wasserstein' \(plugin 'adversarial'\): trains a critic that nothing keeps Lipschitz \(no clip, no gradient_penalty"
GP = {"gp": {"type": "gradient_penalty", "critic": "critic", "fake": "fake"}}


def test_a_wasserstein_critic_that_nothing_keeps_lipschitz_is_warned_of_at_the_loss(recwarn) -> None:
    with pytest.warns(SpecWarning, match=UNCONSTRAINED):
        build_spec(cg.load_spec(_wgan({}, {})), "cpu")
    r1 = {"r1": {"type": "r1_penalty", "critic": "critic"}}
    clipped_twin = {"twin": {"type": "wasserstein", "critic": "critic", "real": "x", "fake": "fake", "clip": 0.01}}  # clips the shared critic
    twins = _wgan({}, {}, clipped_twin)
    twins["players"]["generator"]["terms"] = ["adv.generator", "twin.generator"]
    for kept in (_wgan({}, {"clip": 0.01}), _wgan({}, {}, GP), _wgan({}, {}, r1), _wgan({"spectral_norm": True}, {}), twins):
        recwarn.clear()
        build_spec(cg.load_spec(kept), "cpu")
        assert not [w for w in recwarn if issubclass(w.category, SpecWarning)], kept


def test_a_penalty_that_no_player_trains_keeps_nothing_lipschitz() -> None:
    forgotten = _wgan({}, {}, GP)
    forgotten["players"]["critic"]["terms"] = ["adv.critic"]  # gp.critic left out: the usual slip
    weightless = _wgan({}, {}, {"gp": {**GP["gp"], "weight": 0.0}})
    unweighted = _wgan({}, {}, GP)
    unweighted["players"]["critic"]["terms"] = {"adv.critic": 1.0, "gp.critic": 0.0}
    for spec in (forgotten, weightless, unweighted):
        with pytest.warns(SpecWarning, match=UNCONSTRAINED):
            build_spec(cg.load_spec(spec), "cpu")


def test_spectral_norm_does_not_keep_a_batch_normalised_critic_lipschitz() -> None:
    with pytest.warns(SpecWarning, match=UNCONSTRAINED + r".*spectral_norm undone by its batch norm"):
        build_spec(cg.load_spec(_wgan({"spectral_norm": True, "norm": "batch"}, {})), "cpu")


def test_batch_norm_is_found_in_any_layer_but_layer_norm_is_not_batch_norm() -> None:
    assert adversarial.batch_normalised(nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.BatchNorm1d(2))))
    assert adversarial.batch_normalised(nn.Sequential(nn.SyncBatchNorm(2)))
    assert not adversarial.batch_normalised(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2), nn.InstanceNorm2d(2)))


def test_spectral_norm_is_found_by_parametrization_or_by_the_older_hook() -> None:
    assert adversarial.spectrally_normalised(nn.Sequential(nn.Linear(2, 2), nn.utils.parametrizations.spectral_norm(nn.Linear(2, 1))))
    assert adversarial.spectrally_normalised(nn.Sequential(nn.utils.spectral_norm(nn.Linear(2, 1))))
    assert not adversarial.spectrally_normalised(nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(2, 1))))


def test_advice_that_raises_is_blamed_on_the_loss(monkeypatch) -> None:
    monkeypatch.setattr(adversarial.Wasserstein, "advise", lambda self, losses: 1 / 0)
    with pytest.raises(SpecError, match=r"losses\.adv: type 'wasserstein' \(plugin 'adversarial'\) failed to advise: ZeroDivisionError"):
        build_spec(cg.load_spec(_wgan({}, {"clip": 0.01})), "cpu")
