"""Table I's Noise2Map (released backbone) rows and Table III's released backbones: planned by
the paper preset's DAG, trained from the exported backbone, tabulated beside ours out of the
rank."""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import whu_cd_demo_store

from noise2map.config import deep_merge, load_config, released_backbone_row, validate_config
from noise2map.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_the_paper_dag_plans_released_rows_beside_ours(tmp_path):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "-n", "--cores", "1", "--printshellcmds", "--config", "data_mirror=http://127.0.0.1:9/mirror", "--",
           "results/table1.csv", "results/table3.csv"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    # one released-backbone run per (task, data set, seed), each backbone exported once
    assert re.search(r"^train_released_backbone\s+6$", out, re.M)
    assert re.search(r"^export_released_backbone\s+4$", out, re.M)
    released = re.findall(r"noise2map train .*--model (noise2map-\w+) .*--pretrained (\S+) "
                          r"--variant 'released aid-10k backbone' --run-dir (\S+)", out)
    assert {(m, p) for m, p, _ in released} == {(f"noise2map-{t}", "results/pretrain/released/aid-10k/noise2map_unet.pt")
                                                for t in ("ss", "cd")}
    assert {Path(r).parent.name for _, _, r in released} == {"noise2map-ss+released-aid-10k",
                                                             "noise2map-cd+released-aid-10k"}
    # Table I's own Noise2Map rows keep the pipeline's pretraining
    own = re.findall(r"--model noise2map-ss --seed 0 --pretrained (\S+)  ", out)
    assert set(own) == {"results/pretrain/aid/noise2map_unet.pt"}
    # Table III: each published backbone fine-tuned beside our pretraining on its sample
    table3 = dict(re.findall(r"--model noise2map-ss --seed 0 --pretrained (\S+) --ablation table3/(\w+)", out))
    assert {v: p for p, v in table3.items()} == {
        "imagenet": "results/pretrain/imagenet/noise2map_unet.pt",
        "majortom": "results/pretrain/majortom/noise2map_unet.pt",
        **{f"released{n.replace('-', '')}": f"results/pretrain/released/{n}/noise2map_unet.pt"
           for n in ("aid-10k", "sat2gen", "imagenet2gen", "ddpm-church")}}
    assert "noise2map weights export sat2gen --cache weights --output results/pretrain/released/sat2gen" in out


def test_the_released_row_is_off_where_it_would_repeat_or_cannot_run():
    paper = load_config()
    assert released_backbone_row(paper) == "aid-10k"
    assert released_backbone_row(deep_merge(paper, {"pretrain": {"released_backbone": "sat2gen"}})) == "sat2gen"
    # pretrain.source: released already fine-tunes it in the model's own row
    assert released_backbone_row(deep_merge(paper, {"pretrain": {"source": "released"}})) is None
    demo = load_config(ROOT / "workflow/config/demo.yaml")
    assert released_backbone_row(demo) is None and demo["ablations"]["released_backbones"] == []
    for override, key in (({"pretrain": {"released_row": True}}, "pretrain.released_row"),
                          ({"ablations": {"released_backbones": ["sat2gen"]}}, "ablations.released_backbones")):
        with pytest.raises(ConfigError, match=f"`{re.escape(key)}.*` needs `model_size: paper`"):
            validate_config(deep_merge(demo, override))


def test_a_released_backbone_run_is_a_variant_row_out_of_the_rank(tmp_path):
    """The same training from another pretrained UNet, tabulated beside ours: its weights are
    the ones it fine-tuned from, it reads against Noise2Map-CD's paper row, and the paper's
    rank ignores it."""
    from baselines.noise2map_models import DEMO_UNET
    from noise2map.models.noise2map import build_unet
    from noise2map.reporting.tables import write_table1
    from noise2map.training.run import train_run

    config = whu_cd_demo_store(tmp_path)
    config = deep_merge(config, {"training": {"datasets": {"whu": {"cd": {"max_epochs": 1}}}}})
    backbones = {}
    for name, seed in (("ours", 1), ("released", 2)):
        torch.manual_seed(seed)
        backbones[name] = tmp_path / f"{name}_unet.pt"
        torch.save(build_unet(DEMO_UNET).state_dict(), backbones[name])
    runs = tmp_path / "results" / "runs" / "cd" / "whu"
    own = train_run(config, "cd", "whu", "noise2map-cd", 0, runs / "noise2map-cd" / "seed0", backbones["ours"],
                    threads=1)
    var = train_run(config, "cd", "whu", "noise2map-cd", 0, runs / "noise2map-cd+released-aid-10k" / "seed0",
                    backbones["released"], threads=1, variant="released aid-10k backbone")
    assert (own["model"], own["ranked"], own["variant"]) == ("Noise2Map-CD", True, None)
    assert (var["model"], var["ranked"], var["variant"]) == ("Noise2Map-CD (released aid-10k backbone)", False,
                                                             "released aid-10k backbone")
    assert var["paper_model"] == "Noise2Map-CD" and var["num_test_tiles"] == own["num_test_tiles"]
    run_cfg = (runs / "noise2map-cd+released-aid-10k" / "seed0" / "config.yaml").read_text()
    assert f"pretrained_unet: {backbones['released']}" in run_cfg and "variant: released aid-10k backbone" in run_cfg
    paths = [runs / "noise2map-cd" / "seed0" / "metrics.json",
             runs / "noise2map-cd+released-aid-10k" / "seed0" / "metrics.json"]
    table = write_table1(paths, tmp_path / "table1.csv", resamples=10).set_index("model")
    assert table.loc["Noise2Map-CD", "rank"] == 1 and pd.isna(table.loc[var["model"], "rank"])
    better = "Noise2Map-CD" if (own["f1"], own["iou"]) > (var["f1"], var["iou"]) else var["model"]
    assert table.loc[better, "rank_all"] == 1 and table["rank_all"].max() == 2
    assert pd.read_csv(tmp_path / "rank_stability.csv")["model"].tolist() == ["Noise2Map-CD"]
