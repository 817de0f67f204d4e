"""Test kits for plugin authors.

* :mod:`compose_gen.testing.bijectors`: the bijector conformance kit (hypothesis
  strategies, :func:`~compose_gen.testing.bijectors.check_bijector`, checks of every
  registered bijector type's examples);
* :mod:`compose_gen.testing.pytest_plugin`: its pytest fixtures, installed as a
  ``pytest11`` plugin (``check_bijector``, ``check_bijector_type``).

Nothing is imported here, so loading the pytest plugin stays cheap.
"""
