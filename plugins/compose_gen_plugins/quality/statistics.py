"""The sample-quality statistics themselves, as pure tensor functions.

The metric types in this package draw samples, embed them and call these; tests
check these against closed forms and hand-computed cases.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "closest_pairs",
    "frechet_distance",
    "gaussian_moments",
    "inception_score",
    "knn_precision_recall",
    "mode_statistics",
    "nearest_neighbour_distances",
    "pair_distances",
    "pairwise_distances",
    "permutation_p_value",
    "support_estimate",
]


def pairwise_distances(a: Tensor, b: Tensor, chunk: int = 1024) -> Tensor:
    """Euclidean distances ``[len(a), len(b)]`` between rows, computed exactly.

    ``torch.cdist``'s matrix-product shortcut loses digits for near-identical
    rows (distances of 1e-3 between equal float32 vectors), which would hide the
    near-duplicates the birthday test looks for; this uses the direct form.
    """
    a, b = a.flatten(1), b.flatten(1)
    if len(a) == 0 or len(b) == 0:
        return a.new_zeros(len(a), len(b))
    return torch.cat([torch.cdist(part, b, compute_mode="donot_use_mm_for_euclid_dist") for part in a.split(chunk)])


def gaussian_moments(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance of the rows of ``features`` ``[n, d]``, in float64."""
    if len(features) < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {len(features)}")
    f = features.flatten(1).double()
    mean = f.mean(0)
    centred = f - mean
    return mean, centred.T @ centred / (len(f) - 1)


def _psd_sqrt(matrix: Tensor) -> Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(mean1: Tensor, cov1: Tensor, mean2: Tensor, cov2: Tensor) -> float:
    """Squared Fréchet (2-Wasserstein) distance between two Gaussians (Heusel et al. 2017, FID).

    ``d² = |μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})``.  ``Σ₁Σ₂`` is similar to the
    symmetric PSD matrix ``Σ₁^{1/2} Σ₂ Σ₁^{1/2}``, so the trace of its square root is
    the sum of the square roots of that matrix's eigenvalues: computed with two
    symmetric eigendecompositions in float64, no complex round-off to discard
    (``scipy.linalg.sqrtm`` on ``Σ₁Σ₂`` gives the same number, less stably).
    """
    mean1, cov1, mean2, cov2 = (t.double() for t in (mean1, cov1, mean2, cov2))
    if cov1.shape != cov2.shape or mean1.shape != mean2.shape or cov1.shape[-1] != mean1.shape[-1]:
        raise ValueError(
            f"Fréchet distance needs matching moments, got means {tuple(mean1.shape)}, {tuple(mean2.shape)}"
            f" and covariances {tuple(cov1.shape)}, {tuple(cov2.shape)}"
        )
    root1 = _psd_sqrt(cov1)
    cross = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp_min(0).sqrt().sum()
    value = (mean1 - mean2).square().sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * cross
    return max(float(value), 0.0)


def inception_score(probs: Tensor, splits: int = 1) -> tuple[float, float]:
    """``exp(E_x KL(p(y|x) ‖ p(y)))`` with ``p(y)`` the mean prediction (Salimans et al. 2016).

    ``probs`` is ``[n, classes]``; the score is computed on ``splits`` near-equal
    chunks and returned as (mean, population std) over them, as in the original code.
    It is 1 when every prediction is the same and the number of classes when the
    predictions are confident and spread evenly over the classes.
    """
    if probs.ndim != 2 or len(probs) < splits or splits < 1:
        raise ValueError(f"inception score needs probabilities [n >= splits, classes], got {tuple(probs.shape)}")
    scores = []
    for chunk in torch.tensor_split(probs.double(), splits):
        marginal = chunk.mean(0, keepdim=True)
        kl = (torch.xlogy(chunk, chunk) - torch.xlogy(chunk, marginal)).sum(1)
        scores.append(kl.mean().exp())
    stacked = torch.stack(scores)
    return float(stacked.mean()), float(stacked.std(correction=0))


def nearest_neighbour_distances(points: Tensor, k: int = 1, chunk: int = 1024) -> Tensor:
    """Distance of each row of ``points`` to its ``k``-th nearest other row, ``chunk`` rows at a time (memory ``chunk × n``,
    not the ``n × n`` of all distances at once: 40 GB for the n = 50 000 of Kynkäänniemi et al.)."""
    if len(points) <= k:
        raise ValueError(f"need more than k={k} points for k-nearest-neighbour distances, got {len(points)}")
    radii = []
    for start, part in zip(range(0, len(points), chunk), points.split(chunk), strict=True):
        distances = pairwise_distances(part, points, chunk)
        rows = torch.arange(len(part), device=points.device)
        distances[rows, start + rows] = math.inf  # a row is no neighbour of its own
        radii.append(distances.kthvalue(k, dim=1).values)
    return torch.cat(radii)


def knn_precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Each set's manifold is the union of balls around its points with radius the
    distance to the point's ``k``-th nearest neighbour in the same set.
    Precision: the fraction of ``fake`` inside the real manifold; recall: the
    fraction of ``real`` inside the fake manifold.
    """
    real, fake = real.flatten(1), fake.flatten(1)

    def covered(query: Tensor, points: Tensor) -> float:
        radii = nearest_neighbour_distances(points, k)
        inside = [(pairwise_distances(part, points) <= radii).any(1) for part in query.split(1024)]
        return float(torch.cat(inside).double().mean())

    return covered(fake, real), covered(real, fake)


def mode_statistics(distances: Tensor, std: Tensor | float, k: float = 3.0) -> tuple[Tensor, Tensor]:
    """Assign samples to their nearest mode; a sample is high quality within ``k·std`` of it.

    ``distances`` is ``[n, modes]``: each sample's distance to each mode (a point,
    or a ring for ring mixtures).  Returns ``(high_quality [n] bool, counts [modes])``
    where ``counts`` are the high-quality samples of each mode (the VEEGAN /
    unrolled-GAN protocol, Srivastava et al. 2017; Metz et al. 2017).  ``std`` is a
    scalar or one per mode.
    """
    nearest, index = distances.min(1)
    modes = distances.shape[1]
    radius = k * torch.as_tensor(std, dtype=distances.dtype, device=distances.device).expand(modes)
    high_quality = nearest <= radius[index]
    return high_quality, torch.bincount(index[high_quality], minlength=modes)


def pair_distances(batch: Tensor) -> Tensor:
    """Distances between rows ``i < j`` of ``batch``, as the ``[s, s]`` matrix with ``inf`` on and below the diagonal, so that
    each pair appears once (and counts of pairs closer than a threshold need no list of pairs)."""
    distances = pairwise_distances(batch, batch)
    return distances.masked_fill_(torch.ones_like(distances, dtype=torch.bool).tril_(), math.inf)


def closest_pairs(distances: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """The ``count`` closest index pairs ``i < j`` (``[count, 2]``) of a :func:`pair_distances` matrix and their distances,
    closest first: a partial sort, where sorting all ``s(s−1)/2`` pairs cost 27 s at s = 8000."""
    s = len(distances)
    values, flat = distances.flatten().topk(min(count, s * (s - 1) // 2), largest=False)
    return torch.stack([flat // s, flat % s], 1), values


def support_estimate(s: int, pairs_per_batch: float, batches: int) -> float:
    """Support size implied by near-duplicates among ``s`` draws (birthday paradox, Arora et al. 2018).

    For a uniform distribution on ``N`` points the number of colliding pairs in a
    batch of ``s`` has mean ``λ = s(s−1)/(2N)`` and ``P(collision) ≈ 1 − e^{−λ}``, so
    ``N̂ = s(s−1) / (2 λ̂)``; a collision probability of 1/2 gives
    ``N̂ = s(s−1)/(2 ln 2) ≈ 0.72 s²`` — Arora et al.'s "support ≈ s²".  Counting pairs
    rather than colliding batches keeps the estimate informative when every batch
    collides.  With no pair in ``batches`` batches, ``λ̂`` is replaced by its 95%
    Poisson upper bound ``3 / batches``, making ``N̂`` a lower bound.
    """
    rate = pairs_per_batch if pairs_per_batch > 0 else 3.0 / batches
    return s * (s - 1) / (2 * rate)


def permutation_p_value(
    larger: Tensor, smaller: Tensor, generator: torch.Generator, permutations: int = 9999, chunk: int = 2**22
) -> float:
    """One-sided permutation-test p-value that ``mean(larger) > mean(smaller)``.

    The share of random relabelings of the pooled values whose mean difference is
    at least the observed one, counting the observed labelling: ``(1 + hits) / (1 +
    permutations)``.  Valid for any distribution with ties (counts, 0/1 indicators).
    The relabelings are drawn ``chunk`` values at a time, so memory does not grow with
    ``permutations`` × the number of values.
    """
    pooled = torch.cat([larger.flatten(), smaller.flatten()]).double().cpu()
    split = larger.numel()
    observed = pooled[:split].mean() - pooled[split:].mean()
    hits = 0
    rows = max(1, chunk // len(pooled))
    for start in range(0, permutations, rows):
        order = torch.rand(min(rows, permutations - start), len(pooled), generator=generator, dtype=torch.float64).argsort(1)
        shuffled = pooled[order]
        differences = shuffled[:, :split].mean(1) - shuffled[:, split:].mean(1)
        hits += int((differences >= observed - 1e-9).sum())
    return (1 + hits) / (1 + permutations)
