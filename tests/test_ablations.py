"""The ablation tables IV (T) and V (scheduler): variants, protocol, table builder."""

import json

import pandas as pd
import pytest

from noise2map.ablations import (PAPER_ABLATIONS, ablation_config, paper_setting, run_paths, variants,
                                 write_ablation_table)
from noise2map.config import load_config
from noise2map.data.selection import scene_of, scene_subset
from noise2map.errors import UnknownNameError
from noise2map.metrics import scores_from_counts


@pytest.fixture(scope="module")
def paper():
    return load_config()


def test_variants_override_only_their_setting(paper):
    t500 = ablation_config(paper, "table4", "T500")
    assert t500["noise2map"]["scheduler"] == {**paper["noise2map"]["scheduler"], "num_train_timesteps": 500}
    assert (t500["noise2map"]["val_timestep"], t500["noise2map"]["test_timestep"]) == (250, 499)
    heun = ablation_config(paper, "table5", "heun")
    assert heun["noise2map"]["scheduler"]["name"] == "heun" and heun["noise2map"]["test_timestep"] == 999
    # the protocol: WHU, half the training data, 100 epochs, for both tasks
    assert heun["training"]["train_fraction"] == 0.5
    assert heun["training"]["datasets"]["whu"]["ss"]["max_epochs"] == 100
    assert heun["training"]["datasets"]["whu"]["cd"]["class_weights"] == paper["training"]["datasets"]["whu"]["cd"]["class_weights"]
    with pytest.raises(UnknownNameError, match="T600"):
        ablation_config(paper, "table4", "T600")


def test_every_variant_has_the_papers_row(paper):
    rows = pd.read_csv(PAPER_ABLATIONS)
    for table, number in (("table4", "IV"), ("table5", "V")):
        settings = set(rows[rows.table == number].setting)
        assert {paper_setting(table, v) for v in variants(paper)[table]} == settings
    assert len(run_paths(paper, "results", "table5")) == 4 * 2 * len(paper["seeds"])


def test_half_the_training_scenes():
    sources = [f"spacenet7/train/L15-{a}/images_masked/m{m}.tif" for a in range(6) for m in range(10)]
    keep = scene_subset(sources, 0.5, seed=2)
    assert len(keep) == 30 and len({scene_of(sources[i]) for i in keep}) == 3
    assert scene_subset(sources, 0.5, seed=2) == keep and scene_subset(sources, 1.0, seed=0) == list(range(60))


def test_table_has_seed_means_paper_values_and_differences(tmp_path):
    paths = []
    for variant, task, seed, counts in (("T500", "cd", 0, (40, 10, 10, 940)), ("T500", "cd", 1, (30, 10, 20, 940)),
                                        ("T1000", "cd", 0, (45, 5, 5, 945))):
        run = tmp_path / "ablations" / "table4" / variant / task / f"seed{seed}"
        run.mkdir(parents=True)
        row = {"task": task, "model": "Noise2Map-CD", "dataset": "WHU", "seed": seed, "preset": "t",
               "tp": counts[0], "fp": counts[1], "fn": counts[2], "tn": counts[3], **scores_from_counts(*counts)}
        (run / "metrics.json").write_text(json.dumps(row))
        paths.append(run / "metrics.json")
    rows = write_ablation_table("table4", paths, tmp_path / "table4.csv").set_index("variant")
    f1s = [scores_from_counts(40, 10, 10, 940)["f1"], scores_from_counts(30, 10, 20, 940)["f1"]]
    assert rows.loc["T500", "f1"] == pytest.approx(sum(f1s) / 2) and rows.loc["T500", "n_seeds"] == 2
    assert rows.loc["T500", "paper_f1"] == 82.52 and rows.loc["T1000", "paper_f1"] == 82.92
    assert rows.loc["T1000", "delta_f1"] == pytest.approx(scores_from_counts(45, 5, 5, 945)["f1"] - 82.92)
    md = (tmp_path / "table4.md").read_text()
    assert "# Table IV" in md and f"({82.52:.2f}, {rows.loc['T500', 'delta_f1']:+.2f})" in md
