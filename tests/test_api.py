"""The Python API: load, build, train, load back, sample and score."""

from __future__ import annotations

import torch

import compose_gen as cg


def test_train_then_load_back(tmp_path, vae_spec) -> None:
    spec = cg.load_spec(vae_spec)
    run = cg.train(spec, out=tmp_path / "run", progress=False)
    assert run.trainer.step == vae_spec["train"]["steps"]
    results = run.evaluate()
    again = cg.load_run(tmp_path / "run")
    assert again.trainer.step == run.trainer.step
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key
    assert again.evaluate()["test/vae.elbo"] == results["test/vae.elbo"]
    x = again.sample(5)
    assert x.shape == (5, 64) and ((x >= 0) & (x <= 1)).all()


def test_training_improves_the_elbo(vae_spec) -> None:
    spec = cg.load_spec(vae_spec, ["train.steps=150"])
    model, data = cg.build(spec, "cpu")
    batch = data.test.batch(slice(0, 256))
    torch.manual_seed(0)
    before = model.evaluate_terms(batch)["vae.elbo"]
    run = cg.runtime.Run(spec, model, data, None, cg.runtime.Trainer(model, cg.runtime.data.BatchStream(data.train, 32, 0, model.device), progress=False))
    run.trainer.fit(150)
    torch.manual_seed(0)
    after = model.evaluate_terms(batch)["vae.elbo"]
    assert after > before + 5.0, (before, after)
