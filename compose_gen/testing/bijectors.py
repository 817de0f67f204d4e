"""Conformance kit for bijectors: hypothesis strategies and one-call checks.

Conventions every bijector follows (the kit checks them):

* **Exact mode.** A bijector with ``stochastic_ladj = True`` returns an unbiased
  estimate of ``ladj`` in training mode and the exact value in eval mode: the
  exact mode *is* ``module.eval()``.  ``y`` itself must not depend on the mode.
* **Context.** A bijector that takes a context sets ``context_shape`` (the event
  shape of the context, a ``torch.Size``); absent or ``None`` means it takes none.
* **Parameters are unconstrained.** Any real value of any parameter gives a valid
  bijector (constraints are enforced by reparametrisation), so the kit perturbs
  every parameter with Gaussian noise: zero-initialised layers are not identities.
* **Data-dependent initialisation** happens on the first ``forward`` call in
  training mode; the kit makes one such call on a warm-up batch first.
* **Examples.** Each bijector type declares small example parameters in its
  pydantic model (event sizes of at most ~16), as standard JSON-schema examples::

      class CouplingParams(Params):
          model_config = ConfigDict(json_schema_extra={"examples": [{"shape": [4], "hidden": [8]}]})

  Inline ``{type: ...}`` dicts in ``Ref`` fields of an example are built from the
  same catalogue.  A bijector type without examples fails the conformance suite.
"""
