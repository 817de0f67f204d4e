"""A plugin failing during training or evaluation is named (player, step, spec part, type, plugin) and nothing saved is lost."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from compose_gen_plugins import datasets, metrics, networks

from compose_gen import ComponentType, Loss, Params, Value, make_catalogue
from compose_gen.runtime import EvaluationFailed, Run, StepFailed, build
from compose_gen.runtime.checkpoint import list_checkpoints
from compose_gen.spec import SpecError, load_spec
from compose_gen.testing.plugins import plugin


class FitParams(Params):
    pred: Value
    x: Value = "x"
    #: The call (1-based, with gradients; the dry run makes the first) that raises; 0: none.
    raise_at: int = 0


class Fit(Loss):
    def __init__(self, raise_at: int) -> None:
        super().__init__()
        self.raise_at, self.calls = raise_at, 0

    def forward(self, inputs, terms):
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.raise_at:
                raise KeyError("late failure")
        return {"loss": ((inputs["pred"] - inputs["x"]) ** 2).mean()}


class Likely(Fit):
    """A density of the fit's residual whose ``log_likelihood`` returns what ``returns`` names instead of one value per example."""

    likelihood_inputs = ("pred", "x")

    def __init__(self, returns: str) -> None:
        super().__init__(0)
        self.returns = returns

    def log_likelihood(self, inputs, samples, ladj):
        per_example = torch.distributions.Normal(inputs["pred"], 1.0).log_prob(inputs["x"]).sum(-1) + ladj
        return {"mean": per_example.mean(), "column": per_example[:, None], "short": per_example[1:], "float": 1.0}[self.returns]


class LikelyParams(FitParams):
    returns: str


class MetricParams(Params):
    breaks: str


def build_metric(p: MetricParams, ctx: object) -> object:
    """A metric that fails as ``breaks`` says."""

    def metric(ectx):
        if p.breaks == "raise":
            raise ZeroDivisionError("metric broke")
        if p.breaks == "mutate":
            ectx.data.test.fields["x"].mul_(0)
            return {"mutated": 1.0}
        if p.breaks == "replace":  # a new tensor, not an in-place change: its version counter starts again at 0
            ectx.data.test.fields["x"] = torch.zeros_like(ectx.data.test.fields["x"])
            return {"replaced": 1.0}
        if p.breaks == "add":
            ectx.data.train.fields["x_scaled"] = 2 * ectx.data.train.fields["x"]
            return {"added": 1.0}
        if p.breaks == "remove":
            del ectx.data.test.fields["y"]
            return {"removed": 1.0}
        if p.breaks == "setting":
            ectx.data.test.ladj_to_model = -100.0
            return {"set": 1.0}
        if p.breaks == "meta_tensor":  # a tensor has no single truth value to compare the old one with
            ectx.data.train.meta["modes"] = torch.zeros(8, 2)
            return {"meta": 1.0}
        if p.breaks == "meta_in_place":  # the same tensor, changed: only its version counter tells
            ectx.data.train.meta["modes"].mul_(0)
            return {"meta": 1.0}
        if p.breaks == "meta_list":  # the same list, an entry changed
            ectx.data.train.meta["radii"][0] = 99.0
            return {"meta": 1.0}
        if p.breaks == "reassign":  # its own context's data, which no later metric reads
            ectx.data = type(ectx.data)(ectx.data.train, ectx.data.test.__class__({"x": ectx.data.test.fields["x"] * 0}))
            return {"reassigned": 1.0}
        if p.breaks == "reads_x":
            return {"x_sum": float(ectx.data.test.fields["x"].abs().sum())}
        if p.breaks == "trains":  # e.g. to draw with dropout on
            ectx.model.train()
            return {"trained": 1.0}
        if p.breaks == "reads_mode":
            return {"training_modules": float(sum(m.training for m in ectx.model.modules()))}
        if p.breaks == "spends":  # random draws of its own, on the stream the metrics share
            torch.rand(100)
            return {"spent": 1.0}
        if p.breaks == "picture":  # as two metrics of one type write the same file name
            (ectx.out_dir / "picture.png").write_bytes(bytes(len(ectx.data.test)))
            return {"pictured": 1.0}
        if p.breaks == "draws":
            return {"draw": float(torch.rand(()))}
        if p.breaks == "undefined":
            warnings.warn("nan is undefined here: too few examples", stacklevel=2)
        return {"float": 3.0, "tensor": {"m": torch.tensor([1.0, 2.0])}, "undefined": {"nan": math.nan, "inf": -math.inf, "ok": 1.0}}[p.breaks]

    return metric


FAILING = plugin(
    ComponentType("t_fit", "loss", FitParams, lambda p, ctx: Fit(p.raise_at), doc="Squared error."),
    ComponentType("t_metric", "metric", MetricParams, build_metric),
    ComponentType("t_likely", "loss", LikelyParams, lambda p, ctx: Likely(p.returns), doc="Squared error, with a broken likelihood."),
    name="failing",
)


@pytest.fixture(scope="module")
def catalogue():
    return make_catalogue([FAILING, datasets, networks, metrics], entry_points=False)


def spec(raise_at: int = 0, metric_breaks: tuple[str, ...] = ()) -> dict:
    return {
        "name": "failing",
        "device": "cpu",
        "data": {"type": "moons", "n": 64},
        "components": {"net": {"type": "mlp", "in_features": 2, "out_features": 2, "hidden": [4]}},
        "graph": {"pred": "net(x)"},
        "losses": {"fit": {"type": "t_fit", "pred": "pred", "raise_at": raise_at}},
        "train": {"steps": 4, "batch_size": 16, "checkpoint_every": 1},
        "evaluate": {"metrics": [{"type": "test_losses"}, *({"type": "t_metric", "breaks": b} for b in metric_breaks)]},
    }


def test_a_loss_raising_mid_training_is_named_and_the_checkpoints_stay(catalogue, tmp_path) -> None:
    run = Run.create(load_spec(spec(raise_at=4), catalogue=catalogue), tmp_path / "run", progress=False)
    with pytest.raises(StepFailed) as info:
        run.train()
    message = str(info.value)
    assert message.startswith("player 'model', step 3: ")
    assert "losses.fit: type 't_fit' (plugin 'failing') raised KeyError: 'late failure'" in message
    assert "checkpoints already written are kept" in message
    assert [c.name for c in list_checkpoints(tmp_path / "run")] == ["step-00000001", "step-00000002"]
    assert isinstance(info.value.__cause__, KeyError)


def test_a_third_party_plugin_s_own_line_that_raised_is_given(install_plugin, tmp_path) -> None:
    """``IndexError: list index out of range`` named a loss of a plugin, but not which of its lines to look at."""
    install_plugin(
        "slipping",
        """
        import torch
        from compose_gen import ComponentType, Loss, Params, Value, hookimpl

        class P(Params):
            pred: Value
            fail_in: str = "forward"

        class Slips(Loss):
            def __init__(self, fail_in):
                super().__init__()
                self.fail_in, self.calls = fail_in, 0

            def forward(self, inputs, terms):
                self.calls += torch.is_grad_enabled()
                if self.calls == 3:
                    [][0]
                return {"loss": inputs["pred"].square().mean()}

        def build(p, ctx):
            if p.fail_in == "build":
                {}["missing"]
            return Slips(p.fail_in)

        @hookimpl
        def compose_gen_types():
            return [ComponentType("slips", "loss", P, build, doc="Raises on its third step.")]
        """,
    )
    catalogue = make_catalogue()
    source = tmp_path / "slipping.py"
    failing = spec()
    failing["losses"] = {"fit": {"type": "slips", "pred": "pred"}}
    run = Run.create(load_spec(failing, catalogue=catalogue), tmp_path / "run", progress=False)
    with pytest.raises(StepFailed, match=rf"type 'slips' \(plugin 'slipping'\) raised IndexError: list index out of range \({source}:17\);"):
        run.train()
    failing["losses"]["fit"]["fail_in"] = "build"
    with pytest.raises(SpecError, match=rf"failed to build: KeyError: 'missing' \({source}:22\)$"):
        build(load_spec(failing, catalogue=catalogue), "cpu")


def test_a_loss_raising_before_the_first_checkpoint_says_none_was_written(catalogue, tmp_path) -> None:
    run = Run.create(load_spec(spec(raise_at=2), catalogue=catalogue), tmp_path / "run", progress=False)
    with pytest.raises(StepFailed, match=r"^player 'model', step 1: .*training stopped, no checkpoint was written yet$"):
        run.train()
    assert list_checkpoints(tmp_path / "run") == []


def test_failing_metrics_are_named_and_the_others_are_written(catalogue, tmp_path) -> None:
    run = Run.create(load_spec(spec(metric_breaks=("raise", "float", "tensor")), catalogue=catalogue), tmp_path / "run", progress=False)
    with pytest.raises(EvaluationFailed) as info:
        run.train(1)
    message = str(info.value)
    assert message.startswith(f"3 metric(s) failed (checkpoints are untouched; the other metrics are in {tmp_path / 'run' / 'evaluation.json'}):")
    assert "evaluate.metrics[1]: type 't_metric' (plugin 'failing') raised ZeroDivisionError: metric broke" in message
    assert "evaluate.metrics[2]: type 't_metric' (plugin 'failing') broke the metric contract: returned a float, not a dict of named floats" in message
    assert "evaluate.metrics[3]: type 't_metric' (plugin 'failing') broke the metric contract: returned 'm' (a Tensor of shape (2,)), not floats" in message
    written = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert written["step"] == 1 and "test/fit" in written
    assert sorted(written["failed"]) == ["evaluate.metrics[1]", "evaluate.metrics[2]", "evaluate.metrics[3]"]
    assert info.value.results == written
    assert list_checkpoints(tmp_path / "run")


def test_a_metric_that_changes_the_data_in_place_is_named_and_no_later_metric_reads_the_altered_data(catalogue, tmp_path) -> None:
    """Each later metric would score the altered split (a flow's test NLL fell from 3.81 to 2.61) and be recorded."""
    run = Run.create(load_spec(spec(metric_breaks=("mutate", "undefined")), catalogue=catalogue), tmp_path / "run", progress=False)
    with pytest.raises(EvaluationFailed) as info:
        run.train(1)
    assert "evaluate.metrics[1]: type 't_metric' (plugin 'failing') changed the test split's 'x' in place" in str(info.value)
    assert "nan" not in info.value.results, "the metric after it did not run"
    assert "mutated" not in info.value.results, "nor is its own number, of data it altered, recorded"
    assert "test/fit" in info.value.results, "the metric before it is kept"


@pytest.mark.parametrize(
    ("breaks", "said"),
    [
        ("replace", "replaced the test split's 'x'"),
        ("add", "added the train split's 'x_scaled'"),
        ("remove", "removed the test split's 'y'"),
        ("setting", "changed the test split's ladj_to_model"),
        ("meta_tensor", "changed the train split's meta"),
        ("meta_in_place", "changed the train split's meta"),
        ("meta_list", "changed the train split's meta"),
    ],
)
def test_a_metric_that_replaces_adds_or_removes_a_field_is_named_too(catalogue, tmp_path, breaks, said) -> None:
    """A replaced tensor's version counter starts again where the old one's may have been; an added field once raised a
    bare KeyError that named no metric and recorded nothing."""
    run = Run.create(load_spec(spec(metric_breaks=(breaks, "undefined")), catalogue=catalogue), tmp_path / "run", progress=False)
    run.data.train.meta.update(modes=torch.ones(8, 2), radii=[1.0, 2.0])  # as the 8 gaussians' and rings' data hold theirs
    with pytest.raises(EvaluationFailed) as info:
        run.train(1)
    assert f"evaluate.metrics[1]: type 't_metric' (plugin 'failing') {said} (a metric must leave ectx.data as it is)" in str(info.value)
    own = {"replace": "replaced", "add": "added", "remove": "removed", "setting": "set", "meta_tensor": "meta", "meta_in_place": "meta", "meta_list": "meta"}[breaks]
    assert "nan" not in info.value.results and own not in info.value.results and "test/fit" in info.value.results


def test_meta_that_a_metric_leaves_alone_is_no_change_whatever_it_holds(catalogue, tmp_path) -> None:
    """A tensor made under inference mode (which keeps no version counter), a dict inside itself and a list of tensors
    are compared as they can be, not refused."""
    run = Run.create(load_spec(spec(metric_breaks=("reads_x",)), catalogue=catalogue), tmp_path / "run", progress=False)
    with torch.inference_mode():
        frozen = torch.ones(3)
    meta = run.data.test.meta
    meta.update(frozen=frozen, centres=[torch.zeros(2), torch.ones(2)])
    meta["self"] = meta
    run.train(1)
    assert run.evaluation["x_sum"] == float(run.data.test.fields["x"].abs().sum())


def test_a_metric_that_reassigns_its_context_s_data_does_so_for_itself_alone(catalogue, tmp_path) -> None:
    run = Run.create(load_spec(spec(metric_breaks=("reassign", "reads_x")), catalogue=catalogue), tmp_path / "run", progress=False)
    results = run.train(1) and run.evaluation
    assert results["reassigned"] == 1.0 and results["x_sum"] == float(run.data.test.fields["x"].abs().sum()) > 0


def test_a_change_to_a_split_sharing_memory_with_the_other_names_both_as_the_alternatives(catalogue, tmp_path) -> None:
    """Views of one tensor share a version counter: which of them changed is not known, so neither is named alone."""
    run = Run.create(load_spec(spec(metric_breaks=("mutate",)), catalogue=catalogue), tmp_path / "run", progress=False)
    train, test = run.data.train.fields, run.data.test.fields
    whole = torch.cat([train["x"], test["x"]])
    train["x"], test["x"] = whole[: len(train["x"])], whole[len(train["x"]) :]
    with pytest.raises(EvaluationFailed, match=r"changed the train split's 'x' or test split's 'x' \(which share memory\) in place"):
        run.train(1)


def test_undefined_metric_values_are_recorded_as_null_and_named_in_a_warning(catalogue, tmp_path, capsys) -> None:
    run = Run.create(load_spec(spec(metric_breaks=("undefined",)), catalogue=catalogue), tmp_path / "run", progress=False)
    run.train(1)
    said = capsys.readouterr().err
    assert "warning: evaluate.metrics[1] (t_metric) gave nan = nan, inf = -inf, recorded as null" in said
    assert "warning: evaluate.metrics[1] (t_metric): nan is undefined here: too few examples" in said, "its own reason, where it is"
    assert "UserWarning" not in said
    written = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert written["nan"] is None and written["inf"] is None and written["ok"] == 1.0


def test_a_metric_draws_the_same_numbers_whichever_metrics_come_before_it(catalogue, tmp_path) -> None:
    """A plugin's metric that did not seed itself drew on from where the metrics before it stopped: a sample-based
    number of one checkpoint changed with the metrics listed before it (0.059 alone, 0.041 after test_losses)."""
    draws = []
    for breaks in (("draws",), ("spends", "draws")):
        run = Run.create(load_spec(spec(metric_breaks=breaks), catalogue=catalogue), tmp_path / "-".join(breaks), progress=False)
        run.train(1)
        draws.append(run.evaluation["draw"])
    assert draws[0] == draws[1]


def test_a_metric_that_switches_the_model_to_training_mode_is_named_and_the_mode_put_back(catalogue, tmp_path, capsys) -> None:
    """A metric calling model.train() left dropout on for every metric after it: a test loss rose from 26.77 to 27.60."""
    run = Run.create(load_spec(spec(metric_breaks=("trains", "reads_mode")), catalogue=catalogue), tmp_path / "run", progress=False)
    run.train(1)
    assert run.evaluation["training_modules"] == 0.0
    assert "warning: evaluate.metrics[1] (t_metric) switched" in capsys.readouterr().err


@pytest.mark.parametrize(("returns", "described"), [("mean", r"a Tensor of shape \(\)"), ("column", r"a Tensor of shape \(5, 1\)"), ("short", r"a Tensor of shape \(4,\)"), ("float", "a float")])
def test_a_likelihood_of_another_shape_than_one_per_example_is_blamed_on_the_loss(catalogue, tmp_path, returns, described) -> None:
    """A (5, 1) or a short result came back from run.log_prob silently; a scalar failed concatenating, naming no loss."""
    likely = {**spec(), "losses": {"fit": {"type": "t_likely", "pred": "pred", "returns": returns}}}
    run = Run.create(load_spec(likely, catalogue=catalogue), tmp_path / "run", progress=False)
    with pytest.raises(SpecError, match=rf"losses.fit: type 't_likely' \(plugin 'failing'\) broke the loss contract: log_likelihood returned {described} for 5 examples"):
        run.log_prob(torch.zeros(5, 2))


def test_a_metric_that_fails_on_evaluating_again_keeps_the_numbers_recorded_before(catalogue, tmp_path, capsys) -> None:
    """``evaluate`` again after a plugin broke: its evaluation.json replaced the one that held the metric's numbers."""
    run = Run.create(load_spec(spec(metric_breaks=("undefined",)), catalogue=catalogue), tmp_path / "run", progress=False)
    run.train(1)
    before = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert before["ok"] == 1.0

    def broken(ectx: object) -> dict[str, float]:
        raise ZeroDivisionError("broke since")

    run.model.metrics[1] = broken
    with pytest.raises(EvaluationFailed):
        run.evaluate()
    assert sorted(json.loads((tmp_path / "run" / "evaluation.json").read_text())["failed"]) == ["evaluate.metrics[1]"]
    aside = tmp_path / "run" / "evaluation.dropped-step-00000001.json"
    assert json.loads(aside.read_text()) == before
    said = capsys.readouterr().err
    assert f"held inf, nan, ok, which this evaluation lacks (a metric failed): kept as {aside}" in said, said
    with pytest.raises(EvaluationFailed):  # the failed record lacks nothing a new failure loses: it is simply replaced
        run.evaluate()
    assert not (tmp_path / "run" / "evaluation.dropped-step-00000001-2.json").exists()


def test_a_metric_writing_over_an_earlier_metric_s_picture_is_warned_of(catalogue, tmp_path, capsys) -> None:
    """Two birthday_paradox metrics (raw and classifier space) both wrote birthday_pairs.png: the first was lost unsaid."""
    run = Run.create(load_spec(spec(metric_breaks=("picture", "picture")), catalogue=catalogue), tmp_path / "run", progress=False)
    run.train(1)
    picture = tmp_path / "run" / "picture.png"
    said = capsys.readouterr().err
    assert (
        f"warning: evaluate.metrics[2] (t_metric) wrote {picture} over the one evaluate.metrics[1] (t_metric) wrote, which is lost"
    ) in said, said
    run.evaluate()  # again: a file an earlier evaluation wrote is replaced as meant, said only of the second metric
    assert capsys.readouterr().err.count("over the one") == 1
