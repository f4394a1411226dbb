"""noise2map bench step (the GPU check's per-model part), on the CPU at demo size: each model
takes exactly one optimiser step through train_run, is validated and scored on the test tiles,
and a model that fails is reported without losing the others."""

import torch

from noise2map.bench import step
from noise2map.config import load_config


def test_one_step_per_model_and_one_pretraining_step(tmp_path):
    config = load_config("workflow/config/demo.yaml")
    result = step.run(config, tmp_path, ["unet", "fc-siam-conc"],
                      device="cpu", progress=lambda _: None)
    rows = {r["key"]: r for r in result["models"]}
    assert list(rows) == ["unet", "fc-siam-conc", "pretrain"] and all(r["ok"] for r in rows.values())
    assert rows["unet"]["test_tiles"] == 2 and rows["unet"]["params_m"] == 0.77
    for task, key in (("ss", "unet"), ("cd", "fc-siam-conc")):
        best = torch.load(tmp_path / "runs" / task / key / "checkpoints" / "best.ckpt", map_location="cpu",
                          weights_only=False)
        assert best["global_step"] == 1 and best["epoch"] == 0  # one optimiser step, validated at epoch 0
    assert (tmp_path / "pretrain" / "noise2map_unet.pt").is_file()
    assert result["settings"]["batch_sizes"] == {"ss": 4, "cd": 4} and result["settings"]["precision"] == "32-true"
    from noise2map.bench.common import machine_info, versions

    assert "3 of 3 ran." in step.markdown({**result, "machine": machine_info("cpu"), "versions": versions()})


def test_a_failing_model_is_reported_and_the_others_run(tmp_path, monkeypatch):
    import baselines

    config = load_config("workflow/config/demo.yaml")
    spec = baselines.MODELS["unet"]

    def broken(size, num_classes=2, **_):
        raise RuntimeError("CUDA out of memory (pretend)")

    monkeypatch.setitem(baselines.MODELS, "unet", spec.__class__(**{**spec.__dict__, "build": broken}))
    result = step.run(config, tmp_path, ["unet", "fc-siam-conc"], device="cpu", pretrain=False,
                      progress=lambda _: None)
    rows = {r["key"]: r for r in result["models"]}
    assert not rows["unet"]["ok"] and rows["unet"]["error"] == "RuntimeError: CUDA out of memory (pretend)"
    assert rows["fc-siam-conc"]["ok"]
