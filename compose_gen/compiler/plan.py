"""Per-player execution plans.

A player's plan holds only the graph values its loss terms need (their
ancestors) in topological order, each flagged with whether it can carry a
gradient to the player's parameters; values that cannot run under ``no_grad``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from compose_gen.compiler.graph import SpecGraph, named, node
from compose_gen.core import Loss
from compose_gen.registry import ValueRef, ref_fields, suggest
from compose_gen.spec import Problem, Spec, SpecError
from compose_gen.spec.model import PlayerSpec

__all__ = ["LossCall", "Plan", "ValueStep", "loss_inputs", "make_plans", "parameters_named", "run_plan", "term_address"]


@dataclass
class ValueStep:
    name: str
    fn: Callable[[dict[str, Any]], Any]
    grad: bool


@dataclass
class LossCall:
    name: str
    module: Loss
    inputs: dict[str, str | list[str]]
    terms: frozenset[str]
    weights: dict[str, float]
    #: The terms this player minimises: those it weights other than 0 (weight 0 logs a term, trains nothing).
    trained: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.trained = frozenset(term for term, weight in self.weights.items() if weight != 0)

    def gather(self, values: dict[str, Any]) -> dict[str, Any]:
        """The loss's inputs from the computed values (a tuple for a list-valued field)."""
        return {k: values[v] if isinstance(v, str) else tuple(values[x] for x in v) for k, v in self.inputs.items()}


@dataclass
class Plan:
    """One player's step: the graph ``values`` its terms need, in order, the ``losses`` it calls with their terms
    and weights, and the ``params`` it trains (``param_ids`` their ids, for quick membership tests)."""

    player: str
    spec: PlayerSpec
    params: list[nn.Parameter]
    values: list[ValueStep]
    losses: list[LossCall]
    param_ids: frozenset[int] = field(default_factory=frozenset)


def term_address(loss: str, term: str) -> str:
    """``elbo`` for a single-term loss, ``adv.critic`` otherwise."""
    return loss if term == "loss" else f"{loss}.{term}"


def unknown_player_names(spec: Spec) -> list[Problem]:
    """The components and losses ``players:`` names that the spec does not declare: what ``validate --static`` can check
    of the players without building anything (the build checks each term against its loss's own terms too)."""
    problems = []
    components, losses = spec.sections.components, spec.sections.losses
    for player, pspec in spec.model.players.items():
        path = ("players", player)
        for i, name in enumerate([] if pspec.params == "all" else pspec.params):
            problem = _params_name_problem(name, components, losses)
            if problem is not None:
                problems.append(Problem((*path, "params", i), problem))
        for address in pspec.weights() or {}:
            if address.split(".", 1)[0] not in losses:
                problems.append(Problem((*path, "terms", address), f"unknown loss term {address!r}{suggest(address, losses)}"))
    return problems


def make_plans(
    spec: Spec,
    graph: SpecGraph,
    components: dict[str, nn.Module],
    losses: dict[str, Loss],
    evaluators: dict[str, Callable[[dict[str, Any]], Any]],
) -> dict[str, Plan]:
    """Every player's :class:`Plan` by name (one player, ``model``, training every term, when the spec names none);
    each problem found (a term no loss has, a parameter no term reaches, sides of a game mixed) is raised together
    in one :class:`SpecError`."""
    players = spec.model.players or {"model": PlayerSpec()}
    if not losses:
        raise SpecError([Problem(("losses",), "the spec has no losses, so there is nothing to train: a player minimises loss terms")], spec.source)
    problems: list[Problem] = []
    addresses = {term_address(n, t): (n, t) for n, loss in losses.items() for t in loss.terms}
    single = {n: (n, loss.terms[0]) for n, loss in losses.items() if len(loss.terms) == 1}  # `gp` for `gp.critic`
    plans = {}
    for player, pspec in players.items():
        path = ("players", player)
        known_before = len(problems)
        params, holders = _player_params(pspec, components, losses, path, problems)
        weights = pspec.weights()
        if weights is None:  # omitted: every term (an empty `terms` is refused by the spec)
            weights = {address: 1.0 for address in addresses}
        chosen: dict[str, dict[str, float]] = {}
        named: dict[tuple[str, str], str] = {}
        for address, weight in weights.items():
            target = addresses.get(address) or single.get(address)
            if target is None:
                problems.append(Problem((*path, "terms", address), _unknown_term(address, losses)))
                continue
            if target in named:  # `gp` and `gp.critic`: one term, counted once or twice, with which weight?
                problems.append(Problem((*path, "terms", address), f"{address!r} is term {term_address(*target)!r}, which {named[target]!r} names already; list it once"))
                continue
            named[target] = address
            loss_name, term = target
            chosen.setdefault(loss_name, {})[term] = weight
        calls, needed = [], set()
        for loss_name, term_weights in chosen.items():
            loss = losses[loss_name]
            inputs = loss_inputs(spec, loss_name)
            used = loss.inputs_for(term_weights, inputs)
            inputs = {k: v for k, v in inputs.items() if k in used}
            calls.append(LossCall(loss_name, loss, inputs, frozenset(term_weights), term_weights))
            needed.add(node("loss", loss_name))
            names = [v for ref in inputs.values() for v in ([ref] if isinstance(ref, str) else ref)]
            needed |= {node("field" if v in graph.fields else "value", v) for v in names}
        ancestry = graph.ancestors(needed)
        holding = {n for n in ancestry if n in holders}
        if len(problems) == known_before:  # after a wrong name in params or terms, these would only repeat it
            if not params:
                problems.append(Problem(path, f"player {player!r} has no parameters to update"))
            elif not holding:
                problems.append(Problem(path, f"none of the terms of player {player!r} depends on its parameters"))
        steps = []
        for value in graph.values_in_order(ancestry):
            own = graph.ancestors({node("value", value)})
            steps.append(ValueStep(value, evaluators[value], bool(own & holders)))
        plans[player] = Plan(player, pspec, params, steps, calls, frozenset(map(id, params)))
    if not problems:
        problems += _game_problems(plans, losses, components, graph, explicit=bool(spec.model.players))
    if problems:
        raise SpecError(problems, spec.source)
    return plans


def _game_problems(
    plans: dict[str, Plan], losses: dict[str, Loss], components: dict[str, nn.Module], graph: SpecGraph, explicit: bool
) -> list[Problem]:
    """What is wrong with the players of each two-sided loss (``Loss.opposed``: the critic's side, then the generator's).

    A parameter trained on both sides gets their sum, and they cancel.  With the
    players written out, the critic's side must train the components the loss
    names (its critic), the generator's side must not, and neither side may be
    left to no player.
    """
    problems = []
    for name, loss in losses.items():
        if loss.opposed is None:
            if explicit and loss.generator_term is not None:  # one side of a game, whose other is another loss's
                own, critic = _critic_of(name, loss, components, graph)
                address = term_address(name, loss.generator_term)
                holding = [plan for plan in plans.values() if any(c.name == name and loss.generator_term in c.trained for c in plan.losses)]
                problems += _generator_side_on_critic(address, name, holding, own, critic, f"put {address} under the generator's player")
            continue
        a, b = (term_address(name, term) for term in loss.opposed)
        sides = [[plan for plan in plans.values() if any(c.name == name and term in c.trained for c in plan.losses)] for term in loss.opposed]
        shared = {id(p) for plan in sides[0] for p in plan.params} & {id(p) for plan in sides[1] for p in plan.params} & _reached(name, loss, components, graph)
        if shared:
            holders = _holders(shared, components) or ["the loss"]
            players = list(dict.fromkeys(plan.player for side in sides for plan in side))
            path = ("players",) if explicit else ("losses", name)
            problems.append(Problem(path, (
                f"{a} and {b} oppose each other, but the parameters of {' and '.join(holders)} are trained on both "
                f"({'player' if len(players) == 1 else 'players'} {' and '.join(players)}), so the "
                f"two sides cancel: give each side its own player and parameters, e.g. players: {{critic: {{params: [critic], "
                f"terms: [{a}]}}, generator: {{params: [generator], terms: [{b}]}}}}"
            )))
            continue
        if not explicit:
            continue
        own, critic = _critic_of(name, loss, components, graph)
        for plan in sides[0]:
            if own and not own & plan.param_ids:
                problems.append(Problem(("players", plan.player), (
                    f"{a} is the critic's side of {name!r}: it trains {critic}, which player {plan.player!r} does not hold, "
                    f"so it trains nothing here (is {a} meant for the player of {critic}?)"
                )))
        problems += _generator_side_on_critic(b, name, sides[1], own, critic, f"give {critic} to the player of {a}")
        for side, other, address in ((sides[0], sides[1], a), (sides[1], sides[0], b)):
            if other and not side:
                problems.append(Problem(("players",), f"no player trains {address}, so {name!r} is a game of one side: add a player with terms [{address}]"))
    return problems


def _holders(ids: set[int], components: dict[str, nn.Module]) -> list[str]:
    """The components holding any of the parameters ``ids``, but not one inside another listed (``encoder.net`` in ``encoder``)."""
    holding = {c: module for c, module in components.items() if any(id(p) in ids for p in module.parameters())}
    return [c for c, module in holding.items() if not any(o != c and any(m is module for m in outer.modules()) for o, outer in holding.items())]


def _reached(name: str, loss: Loss, components: dict[str, nn.Module], graph: SpecGraph) -> set[int]:
    """The ids of the parameters loss ``name`` can reach: its own and those of every component upstream of it (a part
    that both players train on other losses is no part of this game)."""
    upstream = named(graph.ancestors({node("loss", name)}), "component")
    return {id(p) for p in loss.parameters()} | {id(p) for c in upstream for p in components[c].parameters()}


def _critic_of(name: str, loss: Loss, components: dict[str, nn.Module], graph: SpecGraph) -> tuple[set[int], str]:
    """The ids of the parameters of the components loss ``name`` names (its critic) and its own, and who holds them."""
    read = named(graph.graph.predecessors(node("loss", name)), "component")
    own = {id(p) for p in loss.parameters()} | {id(p) for c in read for p in components[c].parameters()}
    return own, " and ".join(_holders(own, components))


def _generator_side_on_critic(address: str, name: str, plans: list[Plan], own: set[int], critic: str, remedy: str) -> list[Problem]:
    """A generator's term (``address``) on a player that would train the critic of loss ``name`` to help the generator."""
    return [
        Problem(("players", plan.player), (
            f"{address} is the generator's side of {name!r}: it trains what makes the critic's inputs, but player {plan.player!r} "
            f"would train {critic}, the critic itself, to help the generator ({remedy})"
        ))
        for plan in plans
        if own & plan.param_ids
    ]


def _params_name_problem(name: str, components: Mapping[str, Any], losses: Mapping[str, Any]) -> str | None:
    """Why ``name`` in a player's ``params`` names nothing, or names two things (a component and a loss alike)."""
    if name in components and name in losses:
        return f"{name!r} names a component and a loss alike, and params may list either: rename one of them"
    if name not in components and name not in losses:
        return f"unknown component or loss {name!r}{suggest(name, [*components, *losses])}"
    return None


def parameters_named(name: str, components: Mapping[str, nn.Module], losses: Mapping[str, nn.Module]) -> list[nn.Parameter] | None:
    """What ``name`` in a player's ``params`` trains: a component's parameters, or a loss's own (those of no component:
    a VQ-VAE's codebook); None when it names neither."""
    if name in components:
        return list(components[name].parameters())
    if name in losses:
        held = {id(p) for module in components.values() for p in module.parameters()}
        return [p for p in losses[name].parameters() if id(p) not in held]
    return None


def _player_params(
    pspec: PlayerSpec,
    components: dict[str, nn.Module],
    losses: dict[str, Loss],
    path: tuple[Any, ...],
    problems: list[Problem],
) -> tuple[list[nn.Parameter], set[str]]:
    """The player's parameters (deduplicated) and the graph nodes that hold some of them."""
    if pspec.params == "all":  # every component, and every loss's parameters of its own
        chosen = [p for module in (*components.values(), *losses.values()) for p in module.parameters()]
    else:
        chosen = []
        for i, name in enumerate(pspec.params):
            problem = _params_name_problem(name, components, losses)
            named = [] if problem else parameters_named(name, components, losses) or []
            if problem is None and not named and name not in components:
                problem = f"loss {name!r} has no parameters of its own: list the components it calls"
            if problem is not None:
                problems.append(Problem((*path, "params", i), problem))
            chosen += named
    params: dict[int, nn.Parameter] = {}
    for p in chosen:
        params.setdefault(id(p), p)
    holders = {
        node(kind, name)
        for kind, modules in (("component", components), ("loss", losses))
        for name, module in modules.items()
        if any(id(p) in params for p in module.parameters())
    }
    return list(params.values()), holders


def loss_inputs(spec: Spec, loss_name: str) -> dict[str, str | list[str]]:
    """The graph value (or values) each input field of loss ``loss_name`` names."""
    declared = spec.sections.losses[loss_name]
    inputs = {}
    for field_name, marker in ref_fields(type(declared.params)):
        value = getattr(declared.params, field_name)
        if isinstance(marker, ValueRef) and value is not None:
            inputs[field_name] = value
    return inputs


def _unknown_term(address: str, losses: dict[str, Loss]) -> str:
    if address in losses and len(losses[address].terms) > 1:
        loss_name = address
        options = ", ".join(term_address(loss_name, t) for t in losses[loss_name].terms)
        return f"loss {loss_name!r} has several terms; name one of {options}"
    known = [term_address(n, t) for n, loss in losses.items() for t in loss.terms]
    return f"unknown loss term {address!r}{suggest(address, known)}"


def run_plan(plan: Plan, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Compute the plan's values and loss terms; return the weighted total and every logged scalar."""
    values: dict[str, Any] = dict(batch)
    grad_on = torch.is_grad_enabled()
    for step in plan.values:
        with torch.set_grad_enabled(grad_on and step.grad):
            values[step.name] = step.fn(values)
    total: torch.Tensor | None = None
    logs: dict[str, torch.Tensor] = {}
    for call in plan.losses:
        result = call.module(call.gather(values), call.terms)
        for key, value in result.items():
            logs[term_address(call.name, key)] = value
        for term, weight in call.weights.items():
            if weight == 0:  # logged only: its value (even a non-finite one) and its graph stay out of the total
                continue
            weighted = result[term] if weight == 1 else weight * result[term]  # no extra autograd nodes for weight 1
            total = weighted if total is None else total + weighted
    return total, logs  # type: ignore[return-value]
