"""noise2map bench demo-times (scripts/time_demo.sh): per-rule wall seconds from Snakemake's
benchmark files, the job phases from timing.json, and the models that learned."""

import json

import pandas as pd

from noise2map.bench.demo_times import learning, phase_times, report, rule_times

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(root, rule, name, seconds):
    path = root / rule / f"{name}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds}\t0:00:0{int(seconds)}\t1\t1\t1\t1\t0\t0\t50\t1\n")


def test_rule_times_phases_and_learning(tmp_path):
    bench, results = tmp_path / "benchmarks", tmp_path / "results"
    for name, s in (("a", 4.0), ("b", 6.0), ("c", 8.0)):
        _bench(bench, "train_model", name, s)
    _bench(bench, "write_table1", "t", 2.5)
    rules = rule_times(bench).set_index("rule")
    assert rules.loc["train_model"].tolist() == [3, 18.0, 6.0, 8.0]
    assert list(rules.index) == ["train_model", "write_table1"]  # most expensive first
    for i, fit in enumerate((1.0, 3.0)):
        run = results / "runs" / f"r{i}"
        run.mkdir(parents=True)
        phases = {"imports": 4.0, "config": 0.1, "data": 0.1, "model": 0.2, "trainer": 0.0, "fit": fit, "test": 0.1}
        (run / "timing.json").write_text(json.dumps({"seconds": {**phases, "total": sum(phases.values())}}))
    phases = phase_times(results).set_index("phase")
    assert phases.loc["imports", "mean_s"] == 4.0 and phases.loc["fit", "sum_s"] == 4.0
    # two models, three data sets: the first learns on two (one is all-background), the second on none
    rows = []
    for model, counts in (("A", [(10, 5, 10, 75), (0, 0, 20, 80), (30, 10, 10, 50)]),
                          ("B", [(20, 80, 0, 0), (0, 0, 20, 80), (1, 0, 19, 80)])):
        for dataset, (tp, fp, fn, tn) in zip(("S", "W", "X"), counts):
            rows.append({"task": "cd", "model": model, "dataset": dataset, "seed": 0, "tp": tp, "fp": fp, "fn": fn,
                         "tn": tn})
    pd.DataFrame(rows).to_csv(results / "table1.csv", index=False)
    assert learning(results / "table1.csv").set_index("model")["learned_on"].to_dict() == {"A": 2, "B": 0}
    text = report(results, bench, 75.0, 2)
    assert text.startswith("Demo: 75 s wall (1.2 min) on 2 cores, 4 jobs, 20 job-seconds")
    assert "on at least 2 data sets: 1 of 2" in text
