"""``test_losses``: every logged term over the test split, or the ones ``only`` names, which validate checks."""

from __future__ import annotations

import pytest
import torch

import compose_gen as cg


def test_only_keeps_the_named_terms_with_the_values_of_the_full_evaluation(vae_spec, tmp_path) -> None:
    run = cg.runtime.Run.create(cg.load_spec(vae_spec), tmp_path / "all", progress=False)
    everything = run.evaluate()
    vae_spec["evaluate"]["metrics"] = [{"type": "test_losses", "only": ["vae", "vae.kl"]}]
    some = cg.runtime.Run.create(cg.load_spec(vae_spec), tmp_path / "some", progress=False)
    some.model.load_state_dict(run.model.state_dict())
    kept = some.evaluate()
    assert set(kept) == {"step", "test/vae", "test/vae.kl"} and set(everything) > set(kept)
    for key in ("test/vae", "test/vae.kl"):
        assert kept[key] == pytest.approx(everything[key], rel=1e-6), key
    assert torch.isfinite(torch.tensor(kept["test/vae"]))


@pytest.mark.parametrize("name, suggestion", [("vea", "; did you mean 'vae'?"), ("model.grad_norm", "")])
def test_only_naming_a_term_no_loss_logs_is_refused_by_validate(vae_spec, name, suggestion) -> None:
    """Not an evaluation that prints nothing: the gradient norm is logged in training, never evaluated."""
    vae_spec["evaluate"]["metrics"] = [{"type": "test_losses", "only": [name]}]
    with pytest.raises(cg.SpecError) as info:
        cg.build(cg.load_spec(vae_spec))
    message = str(info.value)
    assert f"evaluate.metrics[0]: type 'test_losses' (plugin 'metrics') reads {name!r}, which no loss logs{suggestion}; logged: vae, vae.elbo" in message


def test_two_metrics_giving_the_same_names_keep_both_results(vae_spec, tmp_path, capsys) -> None:
    """The second is suffixed with its place; before, it silently replaced the first.  Two metrics of one type differ
    in their settings, so each keeps its numbers, equal or not (two mode_coverage at different k lost the second's
    modes_covered where the two agreed); the same name with the same value from a metric of another type, or one a
    metric says is shared (the one classifier's classifier_accuracy), is one number, kept once without a word."""
    frechet = {"type": "frechet_distance", "space": "classifier", "n": 100}
    vae_spec["evaluate"]["metrics"] = [
        {"type": "test_losses"}, {"type": "test_losses", "only": ["vae"]}, frechet, {**frechet, "reference": "train"},
        {"type": "inception_score", "n": 100},
    ]
    results = cg.runtime.Run.create(cg.load_spec(vae_spec), tmp_path / "run", progress=False).evaluate()
    assert "test/vae.kl" in results and results["test/vae@metrics[1]"] == results["test/vae"]
    assert results["frechet_distance@metrics[3]"] != results["frechet_distance"]
    assert "classifier_accuracy" in results and not any(key.startswith("classifier_accuracy@") for key in results), "one classifier"
    assert not any(key.endswith("@metrics[4]") for key in results), "inception_score's classifier_accuracy is frechet_distance's"
    err = capsys.readouterr().err
    assert "warning: evaluate.metrics[3] gives frechet_distance, frechet_distance_data, as an earlier metric does; " \
        "written as frechet_distance@metrics[3], ..." in err
    assert "warning: evaluate.metrics[1] gives test/vae, as an earlier metric does; written as test/vae@metrics[1]" in err
