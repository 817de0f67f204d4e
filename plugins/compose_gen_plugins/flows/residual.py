r"""Invertible residual blocks: i-ResNet (Behrmann et al. 2019, arXiv:1811.00995) and
Residual Flows (Chen et al. 2019, arXiv:1906.02735).

:math:`y = x + g(x)` is invertible when :math:`\operatorname{Lip}(g) < 1`.  ``g`` is an
MLP whose linear layers are spectrally normalised,
:math:`\tilde W = W / \max(1, \hat\sigma(W)/c)` with :math:`c < 1` (``lipschitz``) and
:math:`\hat\sigma` the power-iteration estimate of the largest singular value
(Miyato et al. 2018), with 1-Lipschitz activations, so :math:`\operatorname{Lip}(g) \le c`
up to the estimate's error: a few 10⁻⁴ (relative) where the top singular values
nearly tie, which slows power iteration (trained layers reached 1.0004 c), so keep ``c``
well below 1 (a one-layer ``g`` at c = 0.9999 could lose invertibility).

* **Inverse**: the fixed point of :math:`x \leftarrow y - g(x)` (a contraction),
  iterated to a tolerance; its gradient is the implicit one,
  :math:`\partial x/\partial y = (I + J_g)^{-1}`, applied by a backward hook that
  solves :math:`(I + J_g)^\top w = \bar x` by the same kind of iteration.
  Each example stops on its own: once its last step
  :math:`\lVert x_k - x_{k-1}\rVert_\infty \le \mathrm{tol}\,(1 + \lVert y\rVert_\infty)`
  (:math:`\bar x` for the gradient), norms of that example alone, so its result does not depend on
  its batch-mates.  ``tolerance`` bounds that step, not the error: for a contraction
  by :math:`c`, :math:`\lVert x_k - x^*\rVert_2 \le \frac{c}{1-c}\lVert x_k - x_{k-1}\rVert_2
  \le \frac{c}{1-c}\sqrt D\,\mathrm{tol}\,(1 + \lVert y\rVert_\infty)` in exact arithmetic
  (:math:`9\sqrt D` times the step at :math:`c = 0.9`), plus the rounding of :math:`g`.
* **Log-determinant**: :math:`\log\det(I + J_g) = \sum_{k\ge1} \frac{(-1)^{k+1}}{k}\operatorname{tr}(J_g^k)`.

  - *Exact* (``eval()`` mode, or events of at most ``exact_dims`` features): the
    Jacobian by autograd (``D`` vector-Jacobian products per example) and ``slogdet``.
  - *Stochastic* (training mode): the unbiased Russian-roulette estimator of
    Residual Flows, :math:`\sum_{k=1}^{n} \frac{(-1)^{k+1}}{k}\,
    \frac{v^\top J_g^k v}{P(N \ge k)}` with Rademacher :math:`v` (Hutchinson) and
    :math:`n = ` ``exact_terms`` :math:`+\ N`, :math:`N \sim \mathrm{Geometric}(p)`
    (:math:`P(N \ge j) = (1-p)^j`), ``v`` and ``N`` drawn per example, so the
    estimates of a batch are independent; a call costs :math:`\max_i n_i` products.
    ``shared_roulette`` draws one ``N`` per call instead (Chen et al.'s choice,
    :math:`E[n]` products, estimates correlated).  Either way it is unbiased for
    the log-determinant and for its gradient (nothing is truncated); its variance
    is finite when :math:`\operatorname{Lip}(g)^2 < 1 - p`.  Gradients flow through
    the vector-Jacobian products (no Neumann-series memory trick).
"""

from __future__ import annotations

import functools
import math
import warnings
from itertools import pairwise
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, PositiveInt
from torch import Tensor, nn

from compose_gen import Bijector, BuildContext, ComponentType, Params, SpecWarning, hookimpl
from compose_gen_plugins.flows import EventShape

__all__ = ["LipschitzLinear", "LipSwish", "ResidualBlock"]


class LipSwish(nn.Module):
    r""":math:`x\,\sigma(\beta x)/1.1` with a learned :math:`\beta = \operatorname{softplus}(\tilde\beta) > 0` (Chen et al. 2019).

    1-Lipschitz for every :math:`\beta`: the slope :math:`\sigma(t) + t\sigma(t)(1-\sigma(t))`, :math:`t = \beta x`,
    is at most 1.0998.
    """

    def __init__(self) -> None:
        super().__init__()
        self.raw_beta = nn.Parameter(torch.tensor(0.5))  # β ≈ 0.97, as in Chen et al.'s code

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(F.softplus(self.raw_beta) * x) / 1.1


LIPSCHITZ_ACTIVATIONS: dict[str, type[nn.Module]] = {"lipswish": LipSwish, "elu": nn.ELU, "tanh": nn.Tanh}


@functools.cache
def _eager(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` kept out of compiled graphs (``torch.compiler.disable``).

    Made when a layer is built, not at import: ``torch.compiler.disable`` imports
    ``torch._dynamo``, about 2 s that every command loading the plugins would pay.
    Layers hold the result as an attribute (a plain function of the layer, so deep
    copies of a layer share it correctly).
    """
    return torch.compiler.disable(fn)


class LipschitzLinear(nn.Module):
    r"""Linear layer with :math:`\tilde W = W / \max(1, \hat\sigma/c)`, so :math:`\lVert\tilde W\rVert_2 \lesssim c`.

    :math:`\hat\sigma = u^\top W v` with ``u``, ``v`` from power iteration, refreshed
    (warm-started, to convergence; the first time from the SVD) at the start of a bijector call whenever
    ``weight`` differs from the weight of the last estimate, never inside a
    call: the map is a deterministic function of the state, in both modes.  The
    estimate's weight is kept in the state dict, so a reloaded layer computes
    exactly what the saved one did.
    """

    def __init__(self, in_features: int, out_features: int, lipschitz: float) -> None:
        super().__init__()
        self.lipschitz = lipschitz
        linear = nn.Linear(in_features, out_features)
        self.weight, self.bias = linear.weight, linear.bias
        self.register_buffer("u", F.normalize(torch.randn(out_features), dim=0))
        self.register_buffer("v", F.normalize(torch.randn(in_features), dim=0))
        self.register_buffer("estimated_for", torch.full_like(self.weight, math.nan))  # first call estimates
        self._refresh_eagerly = _eager(_power_iteration)

    def refresh(self, max_iterations: int = 1000) -> None:
        """Power-iterate from the current ``u`` until ``σ̂`` is within 1000 ulp (relative) of its limit (:func:`_settled`) as
        far as the last iterations' convergence rate tells: where σ₂ ≈ σ the early rate is faster than the final one, and
        ``σ̂`` may stop a few 10⁻⁴ short."""
        self._refresh_eagerly(self, max_iterations)

    def normalized_weight(self) -> Tensor:
        sigma = self.u @ self.weight @ self.v
        return self.weight / torch.clamp(sigma / self.lipschitz, min=1.0)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


@torch.no_grad()
def _power_iteration(layer: LipschitzLinear, max_iterations: int) -> None:
    """:meth:`LipschitzLinear.refresh`, run eagerly."""
    weight = layer.weight.detach()
    if torch.equal(weight, layer.estimated_for):
        return
    if layer.estimated_for.isnan().all():  # never estimated: start at the top singular pair, see below
        left, _, right = torch.linalg.svd(weight.float())
        layer.u.copy_(left[:, 0])
        layer.v.copy_(right[0])
    tolerance = 1000 * torch.finfo(weight.dtype).eps
    u, v = layer.u, layer.v
    estimates: list[float] = []  # σ̂ after each iteration
    for _ in range(max_iterations):
        v = F.normalize(weight.T @ u, dim=0)
        image = weight @ v
        u = F.normalize(image, dim=0)
        estimates.append(float(torch.linalg.vector_norm(image)))  # = u·Wv
        if len(estimates) >= 3 and _settled(*estimates[-3:], tolerance):
            break
    layer.u.copy_(u)
    layer.v.copy_(v)
    layer.estimated_for.copy_(weight)


def _settled(first: float, second: float, third: float, tolerance: float) -> bool:
    """Whether power iteration's σ̂, at ``first``, ``second``, then ``third`` after its last three iterations, is within
    ``tolerance`` (relative) of its limit σ.

    σ̂ = ‖W v‖ never decreases, and nears σ geometrically, by ρ = (σ₂/σ)² an iteration (Golub & Van Loan 2013,
    §8.2.1), so what is left to move is the tail change·ρ/(1 − ρ) of the series (Aitken), ρ ≈ (third − second)/(second − first).
    A step as small as the tolerance is not enough where σ₂ ≈ σ: at ρ = 0.99 the tail is 99 such steps.  A change
    that is no longer positive is rounding: σ̂ has converged as far as the precision allows.  No test on σ̂ alone
    can tell a plateau at σ₂ from the limit, which a random start reaches first where σ₂ ≈ σ; hence the first
    estimate starts from the singular value decomposition, and each later one from the last pair, which moves
    little between optimizer steps.
    """
    change, previous = third - second, second - first
    if change <= 0:
        return True
    if change >= previous:  # not yet shrinking geometrically
        return False
    ratio = change / previous
    return change * ratio <= tolerance * third * (1 - ratio)


class ResidualBlock(Bijector):
    """``y = x + g(x)`` with ``Lip(g) < 1``; see the module docstring for inverse and log-determinant."""

    fast = "forward"

    def __init__(
        self,
        shape: tuple[int, ...],
        hidden: list[int],
        lipschitz: float = 0.9,
        activation: Literal["lipswish", "elu", "tanh"] = "lipswish",
        exact_dims: int = 4,
        exact_terms: int = 2,
        roulette_p: float = 0.15,
        shared_roulette: bool = True,
        tolerance: float | None = None,
        max_iterations: int = 2000,
    ) -> None:
        super().__init__(shape)
        self.features = math.prod(shape)
        sizes = [self.features, *hidden, self.features]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(pairwise(sizes)):
            layers.append(LipschitzLinear(a, b, lipschitz))
            if i < len(sizes) - 2:
                layers.append(LIPSCHITZ_ACTIVATIONS[activation]())
        self.g = nn.Sequential(*layers)
        self.stochastic_ladj = self.features > exact_dims
        self.exact_terms, self.roulette_p, self.shared_roulette = exact_terms, roulette_p, shared_roulette
        self.tolerance, self.max_iterations = tolerance, max_iterations
        self._implicit_gradient_eagerly = _eager(_implicit_gradient)
        self._roulette_eagerly = _eager(_roulette_shift_and_ladj)

    def _refresh(self) -> None:
        for layer in self.g:
            if isinstance(layer, LipschitzLinear):
                layer.refresh()

    def _flat(self, values: Tensor) -> Tensor:
        return values.reshape(*self.batch_shape(values), self.features)

    def _exact_ladj(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.features)
        jacobian = torch.func.vmap(torch.func.jacrev(self.g))(rows)
        eye = torch.eye(self.features, dtype=x.dtype, device=x.device)
        return torch.linalg.slogdet(eye + jacobian).logabsdet.reshape(x.shape[:-1])

    def _shift_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``g(x)`` and ``log det(I + J_g(x))``: exact, or the Russian-roulette estimate in training mode."""
        if not (self.stochastic_ladj and self.training):
            return self.g(x), self._exact_ladj(x)
        return self._roulette_eagerly(self, x)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._refresh()
        flat = self._flat(x)
        shift, ladj = self._shift_and_ladj(flat)
        return (flat + shift).reshape(x.shape), ladj

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._refresh()
        flat_y = self._flat(y)
        with torch.no_grad():
            x = self._fixed_point(lambda x: flat_y - self.g(x), flat_y, "inverse")
        x = self._with_implicit_gradient(x, flat_y)
        return x.reshape(y.shape), -self._shift_and_ladj(x)[1]

    def _fixed_point(self, step: Callable[[Tensor], Tensor], start: Tensor, what: str) -> Tensor:
        """``x ← step(x)`` from ``start`` until each example settles by its own rule (module docstring); then it keeps its value."""
        tolerance = self.tolerance or 64 * torch.finfo(start.dtype).eps
        bound = tolerance * (1 + start.detach().abs().amax(-1))  # per example
        current, settled = start, torch.zeros_like(bound, dtype=torch.bool)
        for _ in range(self.max_iterations):
            following = step(current)
            change = (following - current).abs().amax(-1)
            following = torch.where(settled[..., None], current, following)  # a settled example keeps its value
            settled = settled | (change <= bound)
            if bool(settled.all()):
                return following
            current = following
        short = torch.where(settled, 0.0, change / (1 + start.detach().abs().amax(-1)))
        raise RuntimeError(
            f"residual block {what}: fixed-point iteration did not reach tolerance {tolerance:g} in {self.max_iterations} "
            f"steps for {int((~settled).sum())} of {settled.numel()} examples (largest last change {short.max().item():.3g}, "
            "relative to 1 + the example's largest |value|); is Lip(g) < 1?"
        )

    def _with_implicit_gradient(self, x_star: Tensor, y: Tensor) -> Tensor:
        """:func:`_implicit_gradient`, outside compiled graphs: its gradient hook runs autograd itself."""
        return self._implicit_gradient_eagerly(self, x_star, y)


def _roulette_shift_and_ladj(block: ResidualBlock, x: Tensor) -> tuple[Tensor, Tensor]:
    """``g(x)`` and the Russian-roulette estimate of ``log det(I + J_g(x))``.

    Its number of terms is drawn, so it runs outside compiled graphs: traced, each
    new count would be a new graph, and torch.compile would recompile until its limit.
    """
    stop = torch.distributions.Geometric(probs=torch.tensor(block.roulette_p, dtype=x.dtype, device=x.device), validate_args=False)
    extra = stop.sample(() if block.shared_roulette else x.shape[:-1])  # N >= 0 extra terms
    terms = block.exact_terms + int(extra.max())  # (drawn before the vjp: a sync outside the transform)
    probe = torch.randint_like(x, 2) * 2 - 1  # Rademacher: E[v vᵀ] = I
    shift, vjp = torch.func.vjp(block.g, x)
    left, total = probe, x.new_zeros(x.shape[:-1])
    for k in range(1, terms + 1):
        (left,) = vjp(left)  # vᵀ J^k
        beyond = k - block.exact_terms  # the term is kept iff N >= beyond, which has probability (1-p)^beyond
        weight = (extra >= beyond) * (1 - block.roulette_p) ** -beyond if beyond > 0 else 1.0
        total = total + (-1) ** (k + 1) / k * weight * (left * probe).sum(-1)
    return shift, total


def _implicit_gradient(block: ResidualBlock, x_star: Tensor, y: Tensor) -> Tensor:
    """``x*`` with gradients ``(I + J_g)^{-1}`` towards ``y`` and ``-(I + J_g)^{-1} ∂g/∂θ`` towards θ."""
    if not torch.is_grad_enabled():
        return x_star
    point = x_star.detach().requires_grad_()
    shift = block.g(point)
    x = y - shift  # equals x* (to tolerance); its raw gradient is I towards y, -∂g/∂θ towards θ
    if not x.requires_grad:
        return x_star

    def solve(grad: Tensor) -> Tensor:  # w = grad - Jᵀw, i.e. (I + J)ᵀ w = grad
        def transposed_step(w: Tensor) -> Tensor:
            (jw,) = torch.autograd.grad(shift, point, w, retain_graph=True)
            return grad - jw

        return block._fixed_point(transposed_step, grad, "inverse gradient")

    x.register_hook(solve)
    return x


class ResidualParams(Params):
    """An invertible residual block (i-ResNet / Residual Flow)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"shape": [2], "hidden": [8]},
                {"shape": [5], "hidden": [8, 8], "lipschitz": 0.5, "exact_dims": 0},
                {"shape": [1, 2, 2], "hidden": [6], "activation": "elu", "lipschitz": 0.5, "exact_dims": 0},
            ]
        }
    )
    shape: EventShape = Field(..., description="event shape of x, flattened to D features")
    hidden: list[PositiveInt] = Field(default_factory=lambda: [64, 64], description="hidden widths of the MLP g")
    lipschitz: float = Field(0.9, gt=0, lt=1, description="spectral-norm coefficient c: Lip(g) <= c")
    activation: Literal["lipswish", "elu", "tanh"] = Field("lipswish", description="1-Lipschitz activation of g")
    exact_dims: int = Field(4, ge=0, description="events with at most this many features always use the exact log-det")
    exact_terms: PositiveInt = Field(2, description="series terms always computed by the Russian-roulette estimator")
    roulette_p: float = Field(
        0.15, gt=0, lt=1, description="stopping probability of the geometric extra term count; below 1 − lipschitz² for a finite variance"
    )
    shared_roulette: bool = Field(
        True, description="one number of terms per call, as Chen et al. draw it (false: one per example, each batch as long as its longest)"
    )
    tolerance: float | None = Field(
        None,
        gt=0,
        description="fixed-point stopping rule, per example: last step max|x_k − x_{k−1}| <= tolerance·(1 + max|y|); the "
        "error can be lipschitz/(1 − lipschitz)·√D times that step; default 64 × the dtype's machine epsilon",
    )
    max_iterations: PositiveInt = Field(
        2000, description="fixed-point iteration cap for the inverse and its gradient; then an error"
    )


def build_residual(params: ResidualParams, ctx: BuildContext) -> ResidualBlock:
    """Invertible residual block y = x + g(x), Lip(g) < 1 (Behrmann et al. 2019; Chen et al. 2019).

    log|det ∂y/∂x| = log det(I + J_g(x)) = Σ_{k≥1} (−1)^{k+1} tr(J_g(x)^k) / k,  g an MLP with spectrally normalised
    layers, Lip(g) ≤ c (c = lipschitz); exact (autograd Jacobian and slogdet) in eval mode or for at most exact_dims
    features, else in training the unbiased Russian-roulette estimate Σ_{k=1}^{n} (−1)^{k+1} vᵀJ_g^k v / (k P(n ≥ k)),
    v Rademacher, n = exact_terms + N, N ~ Geometric(roulette_p) on {0, 1, …}.  The inverse is the fixed point of x ← y − g(x).

    Behrmann et al. 2019, "Invertible Residual Networks"; Chen et al. 2019, "Residual Flows for Invertible Generative Modeling".
    """
    c, p = params.lipschitz, params.roulette_p
    if math.prod(params.shape) > params.exact_dims and c**2 >= 1 - p:
        warnings.warn(
            SpecWarning(
                f"lipschitz {c:g} with roulette_p {p:g}: the training log-determinant's Russian-roulette estimate stays "
                f"unbiased, but its variance is finite only when lipschitz² < 1 − roulette_p ({c**2:.3g} ≥ {1 - p:.3g}): "
                f"set roulette_p below {1 - c**2:.3g} (shared_roulette: true keeps the cost of more terms down), or lower lipschitz"
            ),
            stacklevel=2,
        )
    return ResidualBlock(
        tuple(params.shape),
        params.hidden,
        params.lipschitz,
        params.activation,
        params.exact_dims,
        params.exact_terms,
        params.roulette_p,
        params.shared_roulette,
        params.tolerance,
        params.max_iterations,
    )


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [ComponentType("residual", "bijector", ResidualParams, build_residual)]
