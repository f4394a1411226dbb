"""The example model's own tests: what the suite will call, with numbers."""

import torch

from noise2map_example.tiny_unet import SPECS, build_cd, build_ss


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts():
    assert _params(build_ss("paper")) == 1_864_194
    assert _params(build_cd("paper")) == 1_865_922  # the 6-channel first convolution: +3·64·9
    assert _params(build_ss("demo")) == 29_634
    for spec in SPECS:
        assert abs(_params(spec.build("paper")) / 1e6 - spec.paper_params_m) / spec.paper_params_m < 0.02


def test_logits_shape_per_task():
    image = torch.rand(2, 3, 32, 32)
    assert build_ss("demo")(image).shape == (2, 2, 32, 32)
    assert build_cd("demo", num_classes=3)(image, image).shape == (2, 3, 32, 32)


def test_specs_name_the_tasks():
    assert [(s.key, s.task) for s in SPECS] == [("tiny-unet-ss", "ss"), ("tiny-unet-cd", "cd")]
