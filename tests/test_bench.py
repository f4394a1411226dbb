"""Efficiency benchmark: FLOP and active-parameter counting on known modules; a CPU smoke run."""

import torch
from torch import nn

from noise2map.bench.efficiency import active_parameters, efficiency_markdown, efficiency_table, flops


class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Conv2d(3, 4, 3, padding=1)
        self.unused = nn.Linear(10, 10)  # registered, never called (like BIT's layer4 + fc)

    def forward(self, x):
        return self.used(x)


def test_flops_of_a_convolution_are_two_per_multiply_add():
    x = torch.zeros(1, 3, 8, 8)
    assert flops(nn.Conv2d(3, 4, 3, padding=1, bias=False), (x,)) == 2 * 3 * 4 * 9 * 8 * 8


def test_active_parameters_leave_out_modules_never_called():
    model = WithUnused()
    assert active_parameters(model, (torch.zeros(1, 3, 8, 8),)) == 3 * 4 * 9 + 4
    assert sum(p.numel() for p in model.parameters()) == 3 * 4 * 9 + 4 + 110


def test_efficiency_table_smoke_on_demo_models():
    table = efficiency_table(["noise2map-cd", "unet"], size="demo", tile=32, repeats=1)
    assert list(table["key"]) == ["noise2map-cd", "unet"]
    assert table.loc[0, "params_ratio"] == 1.0 and table.loc[0, "flops_ratio"] == 1.0
    assert (table["gflops"] > 0).all() and (table["latency_ms"] > 0).all()
    assert "| Noise2Map-CD | cd |" in efficiency_markdown(table)
