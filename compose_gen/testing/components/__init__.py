"""Conformance kit for priors, encoders, decoders, samplers, losses and metrics.

The bare ``check_*`` functions of :mod:`compose_gen.core.contracts` test one value a
plugin returned; the checks here call a plugin's object the way compose_gen does and
test what it returns, so a plugin author's test is one line::

    from compose_gen.testing.components import check_dataset, check_decoder, check_encoder, check_loss, check_metric, check_prior, check_sampler

    check_prior(MyPrior((4,)))
    check_encoder(encoder, x)                 # x: (n, *event) with one batch dimension
    check_decoder(decoder, z, context=c)      # c: one row per example
    check_sampler(sampler)
    check_loss(loss, {"x": x, ...})
    check_metric(metric, eval_ctx)
    check_dataset(lambda: build_mine(MyParams(seed=3), None))

A failure raises :class:`~compose_gen.core.contracts.ContractError` that names the
object, what is wrong and what was expected.  What each check verifies:

* **distribution modules** (:func:`check_distribution_module`, and its wrappers
  :func:`check_prior`, :func:`check_encoder`, :func:`check_decoder`): ``forward``
  returns a ``Distribution`` passing ``check_distribution``, of batch shape ``(n,)``
  for ``n`` input rows (``()`` for a prior); ``sample``/``rsample`` give
  ``(m, *batch, *event)`` and ``log_prob`` of them ``(m, *batch)``, finite; examples
  are independent; the module broadcasts over **prepended sample dimensions**: given
  an input of shape ``(*S, n, ...)`` (slice ``i`` being the batch rolled by ``i``),
  its ``log_prob`` of values of shape ``(n, ...)`` has shape ``(*S, n)`` and equals,
  slice by slice, the module applied to that slice, a context of ``n`` rows being
  broadcast the same way; given a context, changing it changes ``log_prob`` (the
  model uses it); every parameter receives a finite gradient from ``log_prob``, and
  with ``has_rsample`` the draws of ``rsample`` carry gradients to every parameter
  (``sample_shape=()`` skips the sample dimensions, for an encoder only applied to data).
  A prior also takes ``temperature``, which changes its draws or its ``log_prob``,
  does not widen its spread below 1 (nor narrow it above), and gives finite draws
  at 0 (or, for a prior that has none, is refused with ``ValueError`` unless it is 1);
  its ``sample``/``rsample`` graph methods draw ``(n, *event)`` at that temperature,
  ``rsample``'s with gradients.
* **samplers** (:func:`check_sampler`): ``check_conditions``; the same draws from the
  same seed of torch's global stream (no generator of its own); ``check_samples`` and
  finiteness for several counts (1, ``n``, and ``classes + 1`` when it samples by
  class), every count giving examples of one shape; a temperature changes the draws
  (or, for a sampler that has none, is refused with ``ValueError`` unless it is 1); a
  sampler that samples by class draws other samples for other labels.
* **losses** (:func:`check_loss`): ``check_loss_terms``; ``check_loss_result``; every
  entry finite; each requested term's gradient reaches some parameter or input that
  requires grad (at least one must: make the inputs as a player would), and is
  finite; with ``grad_to``, it reaches the inputs named there; a term with
  ``term_inputs`` has the same value computed from just those inputs.
* **datasets** (:func:`check_dataset`): ``check_splits``, and a second build from the same
  parameters gives the same examples in the same order (the fingerprints a checkpoint
  records), whatever torch's global random state.
* **metrics** (:func:`check_metric`): called as an evaluation calls them, the model
  in eval mode and autograd off (``torch.enable_grad()`` where a metric differentiates);
  ``check_metric_result``; values finite,
  unless their key is in ``allow_nonfinite`` (for a metric that reports NaN where it
  is undefined, e.g. on too few samples: say so explicitly); the model's parameters,
  buffers, gradients, training mode and ``requires_grad`` flags, and the data's splits, are
  left as they were (plain attributes are not compared: a metric that sets one, a
  sampler's truncation say, must put it back).

Distribution modules are checked on a deep copy in eval mode whose parameters are
perturbed (``param_noise``, so zero-initialised layers show what they read);
samplers are called in eval mode, losses as they are; all with a seeded random
stream, the caller's left as it was.
"""

from compose_gen.testing.components._datasets import check_dataset
from compose_gen.testing.components._distributions import check_decoder, check_distribution_module, check_encoder, check_prior
from compose_gen.testing.components._losses import check_loss
from compose_gen.testing.components._metrics import check_metric
from compose_gen.testing.components._samplers import check_sampler

__all__ = [
    "check_dataset",
    "check_decoder",
    "check_distribution_module",
    "check_encoder",
    "check_loss",
    "check_metric",
    "check_prior",
    "check_sampler",
]
