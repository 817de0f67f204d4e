"""Test kits for plugin authors.

* :mod:`compose_gen.testing.components`: checks of priors, encoders, decoders
  (:func:`~compose_gen.testing.components.check_prior`, ``check_encoder``,
  ``check_decoder``, all built on ``check_distribution_module``), samplers
  (``check_sampler``), losses (``check_loss``), metrics (``check_metric``) and
  datasets (``check_dataset``): each
  calls the object as compose_gen does and raises
  :class:`~compose_gen.core.contracts.ContractError` naming what is wrong.  Import
  and call them in any test; they need no fixture or option;
* :mod:`compose_gen.testing.bijectors`: the bijector conformance kit (hypothesis
  strategies, :func:`~compose_gen.testing.bijectors.check_bijector`, checks of every
  registered bijector type's examples);
* :mod:`compose_gen.testing.pytest_plugin`: the bijector kit's pytest fixtures,
  installed as a ``pytest11`` plugin (``check_bijector``, ``check_bijector_type``);
* :mod:`compose_gen.testing.plugins`: ``plugin(*types)``, a registrable plugin object
  for a catalogue of just the types a test wants;
* :mod:`compose_gen.testing.doubles`: stand-ins for a trained model in a metric's
  tests (``FixedSampler`` draws from a pool of points, ``DistributionSampler`` from
  a ``torch.distributions`` object), so a metric is tested on models whose answer
  is known.

Nothing is imported here, so loading the pytest plugin stays cheap.
"""
