r"""Picture metrics of latent-variable models, written as PNG grids into the evaluation folder.

* ``reconstruction_grid`` — test images (odd rows) above their reconstructions
  from the posterior mean(s) (even rows);
* ``sample_grid`` — the spec's sampler at several temperatures, one file each
  (sampled by class: one class per column);
* ``interpolation_grid`` — decoded latents between the encodings of test pairs,
  one row per pair: linear :math:`(1-t)a + tb`, or spherical (White 2016,
  "Sampling Generative Networks")
  :math:`\frac{\sin((1-t)\Omega)}{\sin\Omega}a + \frac{\sin(t\Omega)}{\sin\Omega}b`,
  :math:`\cos\Omega = \frac{a\cdot b}{\lVert a\rVert\lVert b\rVert}`, which keeps
  Gaussian latents at a typical norm.

A conditional model reconstructs each image given its own condition, and
interpolates each pair under the condition of its first image.  Each returns
how many images it drew (``…_images``), so the evaluation summary records that
its file was written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from compose_gen import BuildContext, ComponentType, EvalContext, LossName, Params, hookimpl
from compose_gen.core import MAX_PICTURES, class_columns, save_grid
from compose_gen_plugins.networks import conditioned
from compose_gen_plugins.latent.evaluation import batch_context, batch_examples, latent_model
from compose_gen_plugins.latent.vqvae import VQVAE
from compose_gen_plugins.sampling import require_sampler

__all__ = ["interpolate", "require_images", "require_pairs", "slerp"]


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation of flattened ``a``, ``b`` (``(..., D)``) at ``t`` (``(T,)``) -> ``(T, ..., D)``.

    Falls back to linear interpolation where the angle is (numerically) zero or π: at π the
    great circle is not unique (slerp is undefined), and the linear path passes through the origin.
    """
    t = t.reshape(-1, *[1] * a.dim())
    cos = (a * b).sum(-1, keepdim=True) / (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True)).clamp_min(1e-12)
    omega = cos.clamp(-1, 1).acos()
    sin = omega.sin()
    small = sin.abs() < 1e-6
    safe = torch.where(small, torch.ones_like(sin), sin)
    spherical = (((1 - t) * omega).sin() * a + (t * omega).sin() * b) / safe
    return torch.where(small, (1 - t) * a + t * b, spherical)


def interpolate(a: Tensor, b: Tensor, steps: int, mode: str) -> Tensor:
    """``steps`` points from ``a`` to ``b`` (both ends included), ``(steps, *a.shape)``."""
    t = torch.linspace(0, 1, steps, dtype=a.dtype, device=a.device)
    flat_a, flat_b = a.flatten(1), b.flatten(1)
    if mode == "spherical":
        path = slerp(flat_a, flat_b, t)
    else:
        t = t.reshape(-1, 1, 1)
        path = (1 - t) * flat_a + t * flat_b
    return path.reshape(steps, *a.shape)


def require_images(ctx: BuildContext, metric: str) -> None:
    """Refuse a picture-grid metric at build (so ``validate`` finds it) when the data are not images."""
    data = getattr(ctx, "data", None)
    if data is not None and data.test.image_shape is None:
        raise ValueError(
            f"{metric} draws an image grid, and the data are not images (the dataset has no image_shape); "
            "remove it, or for 2-D points use density_plot (a flow) or the sample scatter plots in the run folder"
        )


def require_pairs(pairs: int, available: int) -> None:
    """Refuse ``pairs`` interpolation rows when the test split has fewer than ``2 · pairs`` examples to pair up."""
    if 2 * pairs > available:
        remedy = f"lower `pairs` to at most {available // 2}" if available >= 2 else "give the data a test split of two examples or more"
        raise ValueError(
            f"interpolation_grid: pairs: {pairs} needs {2 * pairs} test examples (two per row), but the test split has "
            f"{available}; {remedy}"
        )


def _images(ectx: EvalContext, x: Tensor) -> Tensor:
    if ectx.test.image_shape is None:
        raise ValueError("image grids need image data (the dataset has no image_shape)")
    return ectx.test.to_display(x).reshape(-1, *ectx.test.image_shape)


def _full_row(images: Tensor, width: int) -> Tensor:
    """``images`` filled out with blank (black) ones to a grid row of ``width``, so that a short last row of test images
    keeps each reconstruction below its own."""
    return torch.cat([images, images.new_zeros(width - len(images), *images.shape[1:])])


class ReconstructionGrid:
    def __init__(self, name: str, model: object, examples: int) -> None:
        self.name, self.model, self.examples = name, model, examples

    @torch.no_grad()
    def __call__(self, ectx: EvalContext) -> dict[str, float]:
        batch = {k: v.to(ectx.device) for k, v in ectx.test.batch(slice(0, self.examples)).items()}
        x, context = batch_examples(ectx, self.model, batch)[0], batch_context(ectx, self.model, batch)
        rows = min(8, len(x))
        pairs = []
        for start in range(0, len(x), rows):
            part = slice(start, start + rows)
            reconstruction = conditioned(self.model.reconstruct, x[part], None if context is None else context[part])
            pairs += [_full_row(_images(ectx, x[part]), rows), _full_row(_images(ectx, reconstruction), rows)]
        save_grid(torch.cat(pairs), Path(ectx.out_dir) / f"{self.name}_reconstructions.png", nrow=rows)
        return {f"test/{self.name}.reconstruction_images": float(len(x))}


class SampleGrid:
    def __init__(self, temperatures: list[float], samples: int) -> None:
        self.temperatures, self.samples = temperatures, samples

    @torch.no_grad()
    def __call__(self, ectx: EvalContext) -> dict[str, float]:
        torch.manual_seed(ectx.seed)
        for temperature in self.temperatures:
            x = ectx.model.sample(self.samples, temperature)
            conditions = ectx.model.conditions  # sampled by class: one class per column
            columns = class_columns(len(x), conditions.classes if conditions else None)
            save_grid(_images(ectx, x), Path(ectx.out_dir) / f"samples_T{temperature:g}.png", nrow=columns)
        return {"test/sample_images": float(self.samples * len(self.temperatures))}


class InterpolationGrid:
    def __init__(self, name: str, model: object, pairs: int, steps: int, mode: str) -> None:
        self.name, self.model, self.pairs, self.steps, self.mode = name, model, pairs, steps, mode

    @torch.no_grad()
    def __call__(self, ectx: EvalContext) -> dict[str, float]:
        require_pairs(self.pairs, len(ectx.test))
        batch = {k: v.to(ectx.device) for k, v in ectx.test.batch(slice(0, 2 * self.pairs)).items()}
        x, context = batch_examples(ectx, self.model, batch)[0], batch_context(ectx, self.model, batch)
        z = conditioned(self.model.encode, x, context)
        path = interpolate(z[0::2], z[1::2], self.steps, self.mode)  # (steps, pairs, ...)
        if context is not None:  # each pair's path under its first image's condition
            context = context[0::2].repeat_interleave(self.steps, dim=0)
        decoded = conditioned(self.model.decode, path.transpose(0, 1).reshape(-1, *z.shape[1:]), context)
        save_grid(_images(ectx, decoded), Path(ectx.out_dir) / f"{self.name}_interpolation_{self.mode}.png", nrow=self.steps)
        return {f"test/{self.name}.interpolation_images": float(len(decoded))}


class ReconstructionGridParams(Params):
    model: LossName = Field(..., description="name of a loss that can reconstruct (VAE family, autoencoder, vqvae)")
    examples: int = Field(32, gt=0, le=MAX_PICTURES, description=f"test images shown (at most {MAX_PICTURES:,})")


class SampleGridParams(Params):
    temperatures: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: [1.0],
        min_length=1,
        description=(
            "temperatures T ≥ 0 (0: no latent noise, a Gaussian prior's mode), one PNG each, samples_T<T>.png; "
            "each multiplies the sampler's own temperature where it has one (a flow_sampler's)"
        ),
    )
    samples: int = Field(64, gt=0, le=MAX_PICTURES, description=f"images per temperature (at most {MAX_PICTURES:,})")


class PathParams(Params):
    """A picture of rows of images along :func:`interpolate`'s paths, one row per pair of ends."""

    pairs: int = Field(6, gt=0, description="pairs of ends, one row each")
    steps: int = Field(10, ge=2, description=f"images per row, both ends included (pairs × steps at most {MAX_PICTURES:,})")
    mode: Literal["linear", "spherical"] = Field("spherical", description="path: linear, or spherical (White 2016)")

    @model_validator(mode="after")
    def _a_picture(self) -> "PathParams":
        if self.pairs * self.steps > MAX_PICTURES:
            raise ValueError(f"pairs × steps = {self.pairs * self.steps} images; a picture holds at most {MAX_PICTURES:,}")
        return self


class InterpolationGridParams(PathParams):
    model: LossName = Field(..., description="name of a loss that can encode and decode")
    pairs: int = Field(6, gt=0, description="pairs of test images, one row each (at most half the test split)")


def build_reconstruction_grid(p: ReconstructionGridParams, ctx: BuildContext) -> ReconstructionGrid:
    """PNG of test images above their reconstructions."""
    require_images(ctx, "reconstruction_grid")
    return ReconstructionGrid(p.model, latent_model(ctx, p.model, "reconstruct"), p.examples)


def build_sample_grid(p: SampleGridParams, ctx: BuildContext) -> SampleGrid:
    """PNG grids of samples at several temperatures."""
    sampler = require_sampler(ctx, "sample_grid")
    require_images(ctx, "sample_grid")
    other = [t for t in p.temperatures if t != 1]
    if other and isinstance(getattr(sampler, "model", None), VQVAE):  # found by validate, not after training
        raise ValueError(
            f"sample_grid: temperatures {', '.join(f'{t:g}' for t in other)}: the VQ-VAE samples its codes uniformly, "
            "which no temperature changes; give temperatures: [1]"
        )
    return SampleGrid(p.temperatures, p.samples)


def build_interpolation_grid(p: InterpolationGridParams, ctx: BuildContext) -> InterpolationGrid:
    """PNG of decoded linear or spherical latent interpolations between test pairs (White 2016).

    Row r decodes z_t at ``steps`` points t = 0 … 1 between the encodings a, b of a pair of test examples: linear
    z_t = (1 − t)a + tb, or spherical z_t = [sin((1 − t)Ω) a + sin(tΩ) b] / sin Ω with cos Ω = aᵀb / (‖a‖‖b‖), which
    keeps Gaussian latents at a typical norm (linear where sin Ω ≈ 0).

    White 2016, "Sampling Generative Networks".
    """
    require_images(ctx, "interpolation_grid")
    data = getattr(ctx, "data", None)
    if data is not None:
        require_pairs(p.pairs, len(data.test))
    return InterpolationGrid(p.model, latent_model(ctx, p.model, "decode"), p.pairs, p.steps, p.mode)


@hookimpl
def compose_gen_types() -> list[ComponentType]:
    return [
        ComponentType("reconstruction_grid", "metric", ReconstructionGridParams, build_reconstruction_grid),
        ComponentType("sample_grid", "metric", SampleGridParams, build_sample_grid),
        ComponentType("interpolation_grid", "metric", InterpolationGridParams, build_interpolation_grid),
    ]
