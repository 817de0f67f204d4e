"""VQ-VAE: nearest codes, straight-through gradient, codebook and commitment losses, EMA updates, usage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Independent

from compose_gen_plugins.latent.vqvae import VQVAE, VectorQuantizer, code_statistics

CODES, DIM, POSITIONS, BATCH = 5, 3, 4, 6
DTYPE = torch.float64


class Fixed(nn.Module):
    """An 'encoder' whose output is a parameter: z_e itself, so gradients w.r.t. z_e are its .grad."""

    def __init__(self, z_e: Tensor) -> None:
        super().__init__()
        self.z_e = nn.Parameter(z_e.clone())

    def forward(self, x: Tensor) -> Tensor:
        return self.z_e


class LinearBernoulli(nn.Module):
    """p(x|z) = Bernoulli(logits = A z): a decoder whose input gradient is known."""

    discrete = True

    def __init__(self, features: int, out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, out).to(DTYPE)

    def forward(self, z: Tensor) -> Independent:
        return Independent(Bernoulli(logits=self.linear(z), validate_args=False), 1)


def model(ema: bool = False, commitment: float = 0.25, seed: int = 0) -> tuple[VQVAE, Tensor]:
    torch.manual_seed(seed)
    quantizer = VectorQuantizer(CODES, DIM, ema, decay=0.9, epsilon=1e-5, init="uniform").to(DTYPE)
    with torch.no_grad():
        quantizer.codebook.copy_(torch.randn(CODES, DIM, dtype=DTYPE))
        if ema:
            quantizer.code_sum.copy_(quantizer.codebook)
    z_e = torch.randn(BATCH, POSITIONS * DIM, dtype=DTYPE)
    vq = VQVAE(Fixed(z_e), LinearBernoulli(POSITIONS * DIM, 8), quantizer, "flat", commitment)
    x = (torch.rand(BATCH, 8) > 0.5).to(DTYPE)
    return vq, x


def brute_force_codes(vq: VQVAE) -> tuple[Tensor, Tensor]:
    vectors = vq.encoder.z_e.detach().reshape(BATCH, POSITIONS, 1, DIM)
    index = (vectors - vq.quantizer.codebook.detach()).norm(dim=-1).argmin(-1)
    return index, vq.quantizer.codebook.detach()[index]


def test_nearest_codes_match_brute_force() -> None:
    vq, _ = model()
    index, codes = brute_force_codes(vq)
    vectors = vq.to_vectors(vq.encoder.z_e.detach())
    torch.testing.assert_close(vq.quantizer.nearest(vectors), index)
    torch.testing.assert_close(vq.quantize(vectors)[0], codes)


def test_nearest_codes_under_bf16_autocast_are_the_nearest_in_float32() -> None:
    """A bf16 matrix product of vectors and codes put ~1% of a trained VQ-VAE's test vectors at another code."""
    generator = torch.Generator().manual_seed(0)
    quantizer = VectorQuantizer(64, 8, ema=True, decay=0.99, epsilon=1e-5, init="uniform")
    quantizer.codebook.copy_(torch.randn(64, 8, generator=generator))
    vectors = torch.randn(4096, 8, generator=generator)
    exact = torch.cdist(vectors.double(), quantizer.codebook.double()).argmin(1)
    with torch.autocast("cpu", torch.bfloat16):
        assert torch.equal(quantizer.nearest(vectors), exact)


def test_straight_through_passes_the_decoder_gradient_to_the_encoder_unchanged() -> None:
    vq, x = model(ema=True, commitment=0.0)  # loss = reconstruction only
    out = vq({"x": x}, frozenset({"loss"}))
    out["loss"].backward()
    _, codes = brute_force_codes(vq)
    z_q = codes.reshape(BATCH, -1).clone().requires_grad_(True)
    (-vq.decoder(z_q).log_prob(x).mean()).backward()
    torch.testing.assert_close(vq.encoder.z_e.grad, z_q.grad)
    torch.testing.assert_close(vq.decoder(z_q).log_prob(x).mean(), out["reconstruction"])


def test_codebook_and_commitment_losses_and_their_gradients_equal_their_definitions() -> None:
    beta = 0.3
    vq, x = model(commitment=beta)
    vq.decoder.linear.weight.data.zero_()  # the reconstruction no longer depends on z: only the two losses give gradients
    out = vq({"x": x}, frozenset({"loss"}))
    out["loss"].backward()
    index, codes = brute_force_codes(vq)
    z_e = vq.encoder.z_e.detach().reshape(BATCH, POSITIONS, DIM)
    squared = (z_e - codes).square().sum((1, 2))
    torch.testing.assert_close(out["codebook"], squared.mean())
    torch.testing.assert_close(out["commitment"], squared.mean())
    torch.testing.assert_close(out["loss"], -out["reconstruction"] + squared.mean() * (1 + beta))
    # d commitment/d z_e = 2β(z_e − e_k)/B;  d codebook/d e_j = Σ_{i: k_i = j} 2(e_j − z_e,i)/B.
    torch.testing.assert_close(vq.encoder.z_e.grad, (2 * beta * (z_e - codes) / BATCH).reshape(BATCH, -1))
    expected = torch.zeros(CODES, DIM, dtype=DTYPE).index_add_(0, index.reshape(-1), 2 * (codes - z_e).reshape(-1, DIM) / BATCH)
    torch.testing.assert_close(vq.quantizer.codebook.grad, expected)


def test_ema_update_after_a_step_follows_the_moving_average_formulas() -> None:
    vq, x = model(ema=True)
    q = vq.quantizer
    size, sums = q.cluster_size.clone(), q.code_sum.clone()
    vq.train()
    with torch.enable_grad():
        out = vq({"x": x}, frozenset({"loss"}))
    assert out["loss"].requires_grad and q.codebook.grad is None  # the codebook learns by EMA alone
    index, _ = brute_force_codes(vq)
    flat = vq.encoder.z_e.detach().reshape(-1, DIM)
    counts = torch.bincount(index.reshape(-1), minlength=CODES).to(DTYPE)
    batch_sums = torch.zeros(CODES, DIM, dtype=DTYPE).index_add_(0, index.reshape(-1), flat)
    vq.after_step(frozenset({"loss"}))
    new_size = 0.9 * size + 0.1 * counts
    new_sums = 0.9 * sums + 0.1 * batch_sums
    smoothed = (new_size + 1e-5) / (new_size.sum() + CODES * 1e-5) * new_size.sum()
    torch.testing.assert_close(q.cluster_size, new_size)
    torch.testing.assert_close(q.codebook, new_sums / smoothed[:, None])
    before = q.codebook.clone()
    vq.after_step(frozenset({"loss"}))  # nothing remembered: no second update from the same batch
    torch.testing.assert_close(q.codebook, before)


def test_ema_update_under_bf16_autocast_sums_in_the_codebook_precision() -> None:
    """Under autocast the encoder hands on bf16 vectors; the EMA statistics stay float32 and follow the formulas."""
    torch.manual_seed(0)
    q = VectorQuantizer(CODES, DIM, True, decay=0.9, epsilon=1e-5, init="uniform")
    vq = VQVAE(nn.Linear(8, POSITIONS * DIM), LinearBernoulli(POSITIONS * DIM, 8).float(), q, "flat", 0.25)
    x = (torch.rand(BATCH, 8) > 0.5).float()
    size, sums = q.cluster_size.clone(), q.code_sum.clone()
    vq.train()
    with torch.autocast("cpu", torch.bfloat16), torch.enable_grad():
        z_e = vq.encoder(x).detach().reshape(-1, DIM)
        index = q.nearest(z_e)
        vq({"x": x}, frozenset({"loss"}))
    vq.after_step(frozenset({"loss"}))
    assert z_e.dtype == torch.bfloat16 and q.code_sum.dtype == q.codebook.dtype == torch.float32
    counts = torch.bincount(index, minlength=CODES).float()
    new_size = 0.9 * size + 0.1 * counts
    new_sums = 0.9 * sums + 0.1 * torch.zeros(CODES, DIM).index_add_(0, index, z_e.float())
    smoothed = (new_size + 1e-5) / (new_size.sum() + CODES * 1e-5) * new_size.sum()
    torch.testing.assert_close(q.codebook.detach(), new_sums / smoothed[:, None])


def test_data_initialisation_takes_codes_from_the_first_training_batch() -> None:
    torch.manual_seed(0)
    quantizer = VectorQuantizer(CODES, DIM, ema=False, decay=0.9, epsilon=1e-5, init="data").to(DTYPE)
    encoder = Fixed(torch.randn(BATCH, POSITIONS * DIM, dtype=DTYPE))
    vq = VQVAE(encoder, LinearBernoulli(POSITIONS * DIM, 8), quantizer, "flat", 0.25)
    vq({"x": torch.zeros(BATCH, 8, dtype=DTYPE)}, frozenset({"loss"}))
    vectors = vq.encoder.z_e.detach().reshape(-1, DIM)
    distances = (quantizer.codebook.detach()[:, None] - vectors).norm(dim=-1).min(1).values
    assert bool(quantizer.initialised) and (distances == 0).all()


def test_usage_and_perplexity() -> None:
    stats = code_statistics(torch.tensor([3.0, 3.0, 0.0, 0.0]))
    assert float(stats["usage"]) == 0.5 and abs(float(stats["perplexity"]) - 2.0) < 1e-6
    stats = code_statistics(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert float(stats["usage"]) == 0.25 and abs(float(stats["perplexity"]) - 1.0) < 1e-6


def test_channels_layout_quantizes_each_position() -> None:
    torch.manual_seed(0)
    quantizer = VectorQuantizer(CODES, DIM, ema=False, decay=0.9, epsilon=1e-5, init="uniform")
    vq = VQVAE(nn.Identity(), LinearBernoulli(1, 1), quantizer, "channels", 0.25)
    z_e = torch.randn(2, DIM, 4, 4)
    codes, index = vq.quantize(vq.to_vectors(z_e))
    assert index.shape == (2, 4, 4) and vq.from_vectors(codes).shape == z_e.shape
    torch.testing.assert_close(vq.from_vectors(codes)[1, :, 2, 3], quantizer.codebook[index[1, 2, 3]])


def test_sampling_decodes_uniform_codes_and_refuses_a_temperature_it_would_ignore() -> None:
    """`compose-gen sample --temperature 0.01` and 1 wrote the same file: a uniform prior has no temperature."""
    vq, x = model()
    vq({"x": x}, frozenset({"loss"}))  # learns the latent shape from a batch
    assert vq.sample(7).shape == (7, 8)
    with pytest.raises(ValueError, match="samples its codes uniformly, which no temperature changes; got temperature 0.5"):
        vq.sample(7, temperature=0.5)


def test_the_shipped_vqvae_reports_the_whole_splits_codebook_statistics_apart_from_the_batch_means(tmp_path) -> None:
    """codebook_usage counts the codes of every test example at once; test_losses averages the per-batch values."""
    import compose_gen as cg

    spec = cg.load_spec(Path(__file__).parents[3] / "specs" / "vqvae_digits.yaml", ["train.steps=20", "train.batch_size=32"])
    run = cg.train(spec, out=tmp_path / "vq", progress=False)
    results = run.evaluate(record=False)
    assert not any("@" in key for key in results), "two metrics giving one name"
    model = run.model.losses["vq"]
    with torch.no_grad(), run.averaged():
        x = run.data.test.fields["x"].to(run.device)
        _, index = model.quantize(model.to_vectors(model.encoder(x)))
    p = torch.bincount(index.reshape(-1), minlength=model.quantizer.codes).double() / index.numel()
    perplexity = torch.exp(-(p[p > 0] * p[p > 0].log()).sum()).item()
    assert abs(results["test/vq.codebook_perplexity"] - perplexity) < 1e-4
    assert results["test/vq.codebook_usage"] == (p > 0).double().mean().item()


def test_moving_average_settings_without_ema_are_refused() -> None:
    """`{type: vqvae, ema: false, decay: 0.5}` validated and trained the codebook by its loss, the decay unused, silently."""
    from pydantic import ValidationError

    from compose_gen_plugins.latent.vqvae import VQVAEParams

    fields = {"encoder": "encoder", "decoder": "decoder", "code_dim": 4}
    with pytest.raises(ValidationError, match="decay set the moving averages of ema: true; with ema: false .* drop decay"):
        VQVAEParams(**fields, ema=False, decay=0.5)
    with pytest.raises(ValidationError, match="decay and epsilon set the moving averages"):
        VQVAEParams(**fields, decay=0.5, epsilon=1e-3)
    VQVAEParams(**fields, ema=True, decay=0.5, epsilon=1e-3)
    VQVAEParams(**fields, ema=False, decay=0.99, epsilon=1e-5)  # the defaults, as a resolved spec holds them
