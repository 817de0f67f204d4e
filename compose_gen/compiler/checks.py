"""Contract checks on what components return, while a model is built and dry-run.

Each component of a spec is watched from the moment it is built: a prior,
encoder, decoder or flow must return a distribution from ``forward``, a
bijector ``(y, ladj)`` both ways (:meth:`Bijector.check_output`).  A violation is
reported at the component that broke its contract, with its type and plugin,
not at the code that consumed the bad value.

A watched method is a bound method set on the instance, so direct calls
(``bijector.inverse(y)``) are checked as well as ``module(x)``, and a deep copy
of the module checks itself.  :func:`watching` removes every check, from the
built objects and the copies inside them, when it exits, so training steps run
unwatched.

:func:`nonfinite_sources` finds the components whose outputs turn finite inputs
into NaN or inf, for the dry run and the trainer's NaN guard to blame.
"""

from __future__ import annotations

import contextlib
import types
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import Tensor, nn

from compose_gen.core import Bijector, ContractError, check_invertible
from compose_gen.core.contracts import check_critic_scores, check_distribution
from compose_gen.spec import Declared, Spec, SpecError

__all__ = ["ContractWatch", "broken", "enforce", "finite", "nonfinite_examples", "nonfinite_sources", "watching"]

_DISTRIBUTION_KINDS = frozenset({"prior", "encoder", "decoder", "flow"})
_WATCHED_METHODS = ("forward", "inverse")
#: Where a checked instance keeps the method it had set for itself (``_contract_own_inverse``) while the check stands.
_OWN = "_contract_own_"

#: ``check(module, args, kwargs, result)``: raises :class:`ContractError` when ``result`` breaks the contract.
Check = Callable[[Any, tuple[Any, ...], dict[str, Any], Any], None]


class ContractWatch:
    """Checks installed on built objects; :meth:`close` removes them."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self._built: list[nn.Module] = []
        #: The bijectors whose inverse and log-determinant were checked (once each, on the first input they saw).
        self._inverted: set[int] = set()

    def watch(self, declared: Declared, built: Any) -> None:
        """Check the outputs of ``built``, made for ``declared``, from now on (until :meth:`close`)."""
        if not isinstance(built, nn.Module):
            return
        self._built.append(built)
        if isinstance(built, Bijector):
            for direction in _WATCHED_METHODS:
                self._shadow(built, direction, declared, self._bijector_check(direction))
        elif declared.kind in _DISTRIBUTION_KINDS:
            self._shadow(built, "forward", declared, lambda module, args, kwargs, result: check_distribution(result, *args[:1]))
        elif declared.kind == "critic":
            self._shadow(built, "forward", declared, lambda module, args, kwargs, result: check_critic_scores(result, args[0] if args else None))

    def close(self) -> None:
        """Remove every check from the built objects and everything inside them."""
        for built in self._built:
            for module in built.modules():
                for name in _WATCHED_METHODS:
                    if getattr(getattr(vars(module).get(name), "__func__", None), "contract_check", False):
                        delattr(module, name)
                        own = vars(module).pop(_OWN + name, None)
                        if own is not None:  # the method the instance had chosen for itself
                            setattr(module, name, own)
        self._built.clear()

    def _shadow(self, module: nn.Module, name: str, declared: Declared, check: Check) -> None:
        """Make ``module.<name>`` its method followed by ``check``, as a bound method of ``module``: the method an
        instance set for itself (``self.inverse = self._closed_form``), kept to be put back by :meth:`close`, or its
        class's.  A deep copy of ``module`` runs the same method, unchecked."""
        if name in vars(module):  # kept beside the check, so that a deep copy copies it too (rebound to the copy)
            vars(module)[_OWN + name] = vars(module)[name]
        spec = self.spec

        def checked(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
            method = vars(self).get(_OWN + name) or types.MethodType(getattr(type(self), name), self)
            result = method(*args, **kwargs)
            if self is module:  # not in a copy, such as the one the invertibility check perturbs, which checks no copy of its own
                enforce(spec, declared, check, self, args, kwargs, result)
            return result

        checked.contract_check = True  # type: ignore[attr-defined]
        setattr(module, name, types.MethodType(checked, module))  # a deep copy rebinds it to the copy

    def _bijector_check(self, direction: str) -> Check:
        def check(module: Bijector, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
            value = args[0] if args else next(iter(kwargs.values()))
            module.check_output(direction, value, result)  # type: ignore[arg-type]
            if id(module) not in self._inverted:  # a posterior flow's first call samples: checked from that side
                self._inverted.add(id(module))
                check_invertible(module, value, args[1] if len(args) > 1 else kwargs.get("context"), direction)

        return check


def enforce(spec: Spec, declared: Declared, check: Callable[..., object], *args: Any) -> None:
    """Run ``check(*args)``; its :class:`ContractError` becomes a spec error at ``declared`` that names its type and plugin."""
    try:
        check(*args)
    except ContractError as error:
        raise broken(spec, declared, error) from None


def broken(spec: Spec, declared: Declared, error: ContractError) -> SpecError:
    """The spec error for ``declared``'s plugin breaking its kind's contract."""
    return spec.blame(declared, f"broke the {declared.kind} contract: {error}")


@contextlib.contextmanager
def watching(spec: Spec) -> Iterator[ContractWatch]:
    """A :class:`ContractWatch` for the objects built inside the block, removed when it ends."""
    watch = ContractWatch(spec)
    try:
        yield watch
    finally:
        watch.close()


@contextlib.contextmanager
def nonfinite_sources(components: Mapping[str, nn.Module]) -> Iterator[list[str]]:
    """A list that gains, in the order their forwards finish, the names of the ``components`` whose output holds NaN
    or inf while their inputs do not (the innermost first); forward hooks, removed when the block ends."""
    sources: list[str] = []

    def finished(name: str, inputs: tuple[Any, ...], keywords: dict[str, Any], output: Any) -> None:
        if not finite(output) and finite(inputs) and finite(keywords):
            sources.append(name)

    handles = [
        module.register_forward_hook(lambda _, i, k, o, n=name: finished(n, i, k, o), with_kwargs=True) for name, module in components.items()
    ]
    try:
        yield sources
    finally:
        for handle in handles:
            handle.remove()


def nonfinite_examples(x: Tensor) -> int:
    """How many examples of ``x`` (along dim 0) hold a NaN or infinite value."""
    return int((~x.detach().isfinite()).reshape(len(x), -1).any(1).sum())


def finite(value: Any) -> bool:
    """Whether every floating tensor in ``value`` (a tensor, a tuple, list or mapping, a distribution's parameters) is finite."""
    if isinstance(value, Tensor):
        return not value.is_floating_point() or bool(value.detach().isfinite().all())
    if isinstance(value, (tuple, list)):
        return all(map(finite, value))
    if isinstance(value, Mapping):
        return all(map(finite, value.values()))
    if isinstance(value, torch.distributions.Distribution):
        return all(finite(v) for k, v in vars(value).items() if not k.startswith("_") and isinstance(v, (Tensor, torch.distributions.Distribution)))
    return True
