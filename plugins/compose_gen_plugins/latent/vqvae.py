r"""VQ-VAE (van den Oord et al. 2017, "Neural Discrete Representation Learning").

The encoder output is read as vectors :math:`z_e \in \mathbb{R}^D` (``layout: flat``:
the last dimension split into codes of ``code_dim``; ``channels``: a ``(D, H, W)``
map, one vector per position), each replaced by its nearest codebook entry
:math:`e_k`, :math:`k = \arg\min_j \lVert z_e - e_j\rVert`.  The decoder sees
:math:`z_q = z_e + \mathrm{sg}(e_k - z_e)`, whose value is :math:`e_k` and whose
gradient is the identity (the straight-through estimator).  Per example, summed
over every latent vector,

.. math:: \mathcal{L} = -\log p(x|z_q) + \lVert \mathrm{sg}(z_e) - e_k\rVert^2 + \beta\,\lVert z_e - \mathrm{sg}(e_k)\rVert^2

(reconstruction, codebook, commitment).  With ``ema: true`` the codebook is not
learned by gradient but by exponential moving averages (their appendix A.1):
:math:`N_j \leftarrow \gamma N_j + (1-\gamma) n_j`,
:math:`m_j \leftarrow \gamma m_j + (1-\gamma)\sum_{i: k_i = j} z_{e,i}`,
:math:`e_j = m_j / \tilde N_j` with Laplace-smoothed counts :math:`\tilde N`; the
update happens after each optimizer step, from that step's batch.  The codebook
starts at encoder outputs of the first training batch (``init: data``; Łańcucki et
al. 2020) or at uniform noise in :math:`\pm 1/K`.

Logged: codebook ``usage`` (share of codes used in the batch) and ``perplexity``
:math:`\exp(-\sum_j p_j \log p_j)` of the code frequencies.  Sampling decodes
codes drawn uniformly, the prior of the paper before a PixelCNN is fitted.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Literal, Mapping

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from compose_gen import (
    BuildContext,
    ComponentType,
    EvalContext,
    Latch,
    Loss,
    LossName,
    Params,
    Ref,
    Value,
    copy_from_first_process,
    hookimpl,
    sum_over_processes,
    sum_rightmost,
)
from compose_gen.core import batches
from compose_gen_plugins.latent.evaluation import batch_examples
from compose_gen_plugins.latent.model import caution_unbounded, decoded_log_prob

__all__ = ["CodebookUsage", "VQVAE", "VectorQuantizer", "build_codebook_usage", "build_vqvae", "code_statistics"]


def code_statistics(counts: Tensor) -> dict[str, Tensor]:
    """``usage`` (share of codes with a non-zero count) and ``perplexity`` exp(H(p)) of the frequencies ``p``."""
    entropy = torch.special.entr(counts / counts.sum()).sum()  # entr(p) = −p log p, and 0 at p = 0
    return {"usage": counts.count_nonzero() / counts.numel(), "perplexity": entropy.exp()}


class VectorQuantizer(nn.Module):
    """A codebook of ``codes`` vectors of size ``dim`` and the nearest-neighbour lookup."""

    def __init__(self, codes: int, dim: int, ema: bool, decay: float, epsilon: float, init: str) -> None:
        super().__init__()
        self.codes, self.dim, self.ema, self.decay, self.epsilon = codes, dim, ema, decay, epsilon
        codebook = torch.empty(codes, dim).uniform_(-1 / codes, 1 / codes)
        if ema:
            self.register_buffer("codebook", codebook)
            self.register_buffer("cluster_size", torch.ones(codes))
            self.register_buffer("code_sum", codebook.clone())
        else:
            self.codebook = nn.Parameter(codebook)
        self.initialised = Latch(init != "data")
        self._pending: tuple[Tensor, Tensor] | None = None

    def nearest(self, vectors: Tensor) -> Tensor:
        """Index of the nearest code of each vector (``(..., dim) -> (...)``), the distances in the codebook's precision
        at least: under bf16 autocast, a bf16 product gave 1% of vectors a code that is not their nearest."""
        dtype = torch.promote_types(vectors.dtype, self.codebook.dtype)
        flat, codebook = vectors.detach().reshape(-1, self.dim).to(dtype), self.codebook.detach().to(dtype)
        device = flat.device.type
        with torch.autocast(device, enabled=False) if torch.is_autocast_enabled(device) else nullcontext():  # entering it costs 3 µs
            distances = flat.square().sum(1, keepdim=True) - 2 * flat @ codebook.T + codebook.square().sum(1)
        return distances.argmin(1).reshape(vectors.shape[:-1])

    def counts(self, index: Tensor) -> Tensor:
        """Uses of each code: a scatter of fixed shape, which torch.compile traces (``bincount``'s shape depends on the data)."""
        index = index.reshape(-1)
        ones = torch.ones((), dtype=self.codebook.dtype, device=index.device).expand(len(index))
        return torch.zeros(self.codes, dtype=self.codebook.dtype, device=index.device).index_add_(0, index, ones)

    @torch.no_grad()
    def initialise_from(self, vectors: Tensor) -> None:
        """Set the codebook to randomly chosen ``vectors`` (data-dependent initialisation); under data parallelism,
        to process 0's choice, so that every process starts from one codebook."""
        flat = vectors.reshape(-1, self.dim)
        chosen = flat[torch.randint(len(flat), (self.codes,), device=flat.device)]
        copy_from_first_process(chosen)
        self.codebook.copy_(chosen)
        if self.ema:
            self.cluster_size.fill_(1.0)
            self.code_sum.copy_(chosen)
        self.initialised.set()

    @torch.no_grad()
    def remember(self, vectors: Tensor, index: Tensor, counts: Tensor) -> None:
        """Keep this batch's per-code ``counts`` and sums for the next EMA update (in the codebook's precision)."""
        flat = vectors.reshape(-1, self.dim).to(self.code_sum.dtype)  # bf16 under autocast
        sums = torch.zeros_like(self.code_sum).index_add_(0, index.reshape(-1), flat)
        self._pending = (counts, sums)

    @torch.no_grad()
    def update(self) -> None:
        """One EMA step from the remembered batch (from the global batch under data parallelism: the processes' counts
        and sums added up), with Laplace smoothing of the counts."""
        if self._pending is None:
            return
        counts, sums = self._pending
        self._pending = None
        sum_over_processes(counts, sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.code_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (total + self.codes * self.epsilon) * total
        self.codebook.copy_(self.code_sum / smoothed[:, None])


class VQVAE(Loss):
    """Encoder network, vector quantizer, decoder distribution; see the module docstring."""

    terms = ("loss",)

    def __init__(
        self, encoder: nn.Module, decoder: nn.Module, quantizer: VectorQuantizer, layout: str, commitment: float, x_value: str = "x"
    ) -> None:
        super().__init__()
        self.encoder, self.decoder, self.quantizer = encoder, decoder, quantizer
        #: The graph value of the examples x, for metrics to compute.
        self.x_value = x_value
        self.layout, self.commitment = layout, commitment
        self.discrete = getattr(decoder, "discrete", False)
        self.latent_shape: torch.Size | None = None

    def to_vectors(self, z_e: Tensor) -> Tensor:
        """``(..., L·D) -> (..., L, D)`` or ``(..., D, H, W) -> (..., H, W, D)``."""
        if self.layout == "flat":
            if z_e.shape[-1] % self.quantizer.dim:
                raise ValueError(f"encoder output size {z_e.shape[-1]} is not a multiple of code_dim {self.quantizer.dim}")
            return z_e.unflatten(-1, (-1, self.quantizer.dim))
        if z_e.dim() < 3 or z_e.shape[-3] != self.quantizer.dim:
            raise ValueError(f"layout channels needs (..., {self.quantizer.dim}, H, W) encoder outputs, got {tuple(z_e.shape)}")
        return z_e.movedim(-3, -1)

    def from_vectors(self, vectors: Tensor) -> Tensor:
        return vectors.flatten(-2) if self.layout == "flat" else vectors.movedim(-1, -3)

    def quantize(self, vectors: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest codes ``e_k`` and their indices ``k``."""
        index = self.quantizer.nearest(vectors)
        return self.quantizer.codebook[index], index

    def forward(self, inputs: Mapping[str, Any], terms: frozenset[str]) -> dict[str, Tensor]:
        x = inputs["x"]
        vectors = self.to_vectors(self.encoder(x))
        training = self.training and torch.is_grad_enabled()
        if training and not self.quantizer.initialised:
            self.quantizer.initialise_from(vectors)
        codes, index = self.quantize(vectors)
        rank = 2 if self.layout == "flat" else 3
        self.latent_shape = vectors.shape[-rank:-1]
        straight_through = vectors + (codes - vectors).detach()
        reconstruction = decoded_log_prob(self.decoder(self.from_vectors(straight_through)), x).mean()
        commitment = sum_rightmost((vectors - codes.detach()).square(), rank).mean()
        loss = -reconstruction + self.commitment * commitment
        counts = self.quantizer.counts(index)
        if self.quantizer.ema:  # the codebook is a buffer: its loss has the commitment's value and no gradient
            codebook = commitment.detach()
            if training:
                self.quantizer.remember(vectors, index, counts)
        else:
            codebook = sum_rightmost((vectors.detach() - codes).square(), rank).mean()
            loss = loss + codebook
        logs = {"reconstruction": reconstruction, "codebook": codebook, "commitment": commitment}
        return {"loss": loss, **{k: v.detach() for k, v in logs.items()}, **code_statistics(counts)}

    def after_step(self, terms: frozenset[str]) -> None:
        if self.quantizer.ema:
            self.quantizer.update()

    def encode(self, x: Tensor) -> Tensor:
        """The encoder's continuous output z_e (quantized by :meth:`decode`)."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        codes, _ = self.quantize(self.to_vectors(z))
        return self.decoder(self.from_vectors(codes)).mean

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def sample(self, n: int, temperature: float = 1.0, mean: bool = True) -> Tensor:
        """Decode codes drawn uniformly; a uniform prior has no temperature, so one other than 1 is refused (it sampled
        alike at every temperature, silently)."""
        if temperature != 1:
            raise ValueError(
                f"the VQ-VAE samples its codes uniformly, which no temperature changes; got temperature {temperature:g}: sample at 1"
            )
        if self.latent_shape is None:
            raise RuntimeError("the VQ-VAE learns its latent shape from the first batch it encodes")
        index = torch.randint(self.quantizer.codes, (n, *self.latent_shape), device=self.quantizer.codebook.device)
        px = self.decoder(self.from_vectors(self.quantizer.codebook[index]))
        return px.mean if mean else px.sample()


class VQVAEParams(Params):
    encoder: Ref("network") = Field(..., description="network x -> z_e")  # type: ignore[valid-type]
    decoder: Ref("decoder") = Field(..., description="decoder p(x|z_q)")  # type: ignore[valid-type]
    x: Value = Field("x", description="graph value with the examples x")
    codes: int = Field(64, ge=2, description="codebook size K")
    code_dim: int = Field(..., gt=0, description="size D of each code vector")
    layout: Literal["flat", "channels"] = Field(
        "flat",
        description="z_e as vectors: last dim split by code_dim (flat) or a (D, H, W) map (channels: an encoder such as an "
        "mlp with out_features: [D, H, W], and a decoder reading that map, e.g. latent_rank: 3; conv_encoder and "
        "conv_decoder make and read flat vectors)",
    )
    commitment: float = Field(0.25, ge=0.0, description="β, weight of the commitment loss")
    ema: bool = Field(False, description="learn the codebook by exponential moving averages instead of its loss")
    decay: float = Field(0.99, gt=0.0, lt=1.0, description="EMA decay γ")
    epsilon: float = Field(1e-5, gt=0.0, description="Laplace smoothing of the EMA counts")
    init: Literal["data", "uniform"] = Field("data", description="codebook start: first-batch encodings or ±1/K noise")

    @model_validator(mode="after")
    def _ema_settings_need_ema(self) -> "VQVAEParams":
        # not fields_set: a resolved spec holds the defaults
        given = [name for name in ("decay", "epsilon") if getattr(self, name) != type(self).model_fields[name].default]
        if given and not self.ema:
            raise ValueError(
                f"{' and '.join(given)} set the moving averages of ema: true; with ema: false the codebook learns by its loss "
                f"and {'they go' if len(given) > 1 else 'it goes'} unused: set ema: true, or drop {' and '.join(given)}"
            )
        return self


def build_vqvae(p: VQVAEParams, ctx: BuildContext) -> VQVAE:
    """VQ-VAE: nearest codes, straight-through gradients, codebook and commitment losses (van den Oord et al. 2017).

    loss = −log p(x|z_q) + ‖sg[z_e] − e‖² + β ‖z_e − sg[e]‖²,  e = e_k, k = argmin_j ‖z_e − e_j‖,
    per example, the squared distances summed over its latent vectors z_e (β = commitment), then averaged over the batch; sg is
    the stop-gradient, and the decoder reads z_q = z_e + sg[e − z_e], whose value is e and whose gradient is the
    identity (straight-through).  With ``ema: true`` the codebook term leaves the loss and each code follows moving
    averages of the vectors assigned to it: N_j ← γN_j + (1 − γ)n_j, m_j ← γm_j + (1 − γ)Σ_{i: kᵢ = j} z_{e,i},
    e_j = m_j / Ñ_j (Ñ: Laplace-smoothed counts).  Logged: the batch's code usage and perplexity exp(−Σ_j p_j log p_j).

    van den Oord et al. 2017, "Neural Discrete Representation Learning".
    """
    quantizer = VectorQuantizer(p.codes, p.code_dim, p.ema, p.decay, p.epsilon, p.init)
    caution_unbounded(p.x, ctx.component(p.decoder), ctx)
    return VQVAE(ctx.component(p.encoder), ctx.component(p.decoder), quantizer, p.layout, p.commitment, p.x)


class CodebookUsage:
    """Codebook usage and perplexity of a VQ-VAE's codes over the whole test split: ``codebook_usage``, ``codebook_perplexity``.

    Named apart from the loss's own ``usage`` and ``perplexity`` (which ``test_losses`` reports as
    means over test batches, as training logs them per batch, and which depend on the batch size).
    """

    def __init__(self, name: str, model: VQVAE) -> None:
        self.name, self.model = name, model

    def __call__(self, ectx: EvalContext) -> dict[str, float]:
        counts = torch.zeros(self.model.quantizer.codes, device=ectx.device)
        for batch in batches(ectx.test, ectx.batch_size, ectx.device):
            x, _ = batch_examples(ectx, self.model, batch)
            _, index = self.model.quantize(self.model.to_vectors(self.model.encoder(x)))
            counts += self.model.quantizer.counts(index)
        return {f"test/{self.name}.codebook_{k}": float(v) for k, v in code_statistics(counts).items()}


class CodebookUsageParams(Params):
    model: LossName = Field(..., description="name of the vqvae loss")


def build_codebook_usage(p: CodebookUsageParams, ctx: BuildContext) -> CodebookUsage:
    """Test-set codebook usage and perplexity of a VQ-VAE.

    usage = |{j : n_j > 0}| / K,  perplexity = exp(−Σ_j p_j log p_j),  p_j = n_j / Σ_i n_i,
    n_j counting the latent vectors of the whole test split whose nearest code is e_j (K codes): perplexity is K when
    every code is used equally often, 1 when one code takes them all.

    van den Oord et al. 2017, "Neural Discrete Representation Learning".
    """
    model = ctx.loss(p.model)
    if not isinstance(model, VQVAE):
        raise ValueError(f"loss {p.model!r} is a {type(model).__name__}, not a vqvae")
    return CodebookUsage(p.model, model)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("vqvae", "loss", VQVAEParams, build_vqvae),
        ComponentType("codebook_usage", "metric", CodebookUsageParams, build_codebook_usage),
    ]
