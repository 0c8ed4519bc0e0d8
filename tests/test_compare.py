import csv
import sys

import numpy as np
import pytest

from conftest import tiny_overrides
from s4rec_recbole import compare as cmp
from s4rec_recbole.metrics import per_user_metrics, summarize
from s4rec_recbole.runner import main


def test_per_user_metrics_by_hand():
    m = per_user_metrics([0, 4, 5, 30], topk=(5,))
    assert m["hit@5"].tolist() == [1, 1, 0, 0]
    assert np.allclose(m["ndcg@5"], [1.0, 1 / np.log2(6), 0, 0])
    s = summarize([0, 4, 5, 30], [10, 3, 12, 2], head_min_length=10, topk=(5,))
    assert s["head"]["hit@5"] == 0.5 and s["tail"]["hit@5"] == 0.5 and s["users"] == {"overall": 4, "head": 2, "tail": 2}


def test_comparison_table_resume_and_plots(tiny_data_path, tmp_path, monkeypatch):
    over = tiny_overrides(tiny_data_path, tmp_path, n_clusters=8)
    out = cmp.compare(["S4Rec", "SASRec", "ICLRec"], "tiny", seeds=[1, 2], overrides=over,
                      results_dir=tmp_path / "res", log=lambda *a: None)
    runs = out["results"]
    # per-user ranks reproduce RecBole's own test metrics
    for r in runs["SASRec"] + runs["S4Rec"]:
        assert abs(r["test_by_group"]["overall"]["ndcg@20"] - r["test"]["ndcg@20"]) < 1e-4
        assert abs(r["test_by_group"]["overall"]["hit@10"] - r["test"]["hit@10"]) < 1e-4
    assert runs["SASRec"][0]["per_user"]["cluster"] is None and runs["S4Rec"][0]["per_user"]["cluster"]
    md = out["markdown"]
    assert md.count("| S4Rec | 2 |") == 3 and "history masked" in md and "**tail**" in md
    assert set(out["tests"]) == {"SASRec", "ICLRec"} and all(0 <= p <= 1 for p in out["tests"]["SASRec"].values())
    prefix = out["prefix"]
    with open(f"{prefix}.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["S4Rec", "SASRec", "ICLRec"]
    tail = [r["test_by_group"]["tail"]["hit@5"] for r in runs["S4Rec"]]
    assert float(rows[0]["tail hit@5 mean"]) == pytest.approx(sum(tail) / len(tail), abs=1e-4)
    mean = lambda model: np.mean([r["test_by_group"]["overall"]["hit@10"] for r in runs[model]])
    assert float(rows[2]["ratio hit@10"]) == pytest.approx(mean("S4Rec") / mean("ICLRec")) and "Ratio of S4Rec" in md
    assert set(out["gains"]) == {"SASRec", "ICLRec"} and "| SASRec | ndcg@20 |" in md
    assert rows[1]["tail gain hit@5"] != "" and rows[0].get("tail gain hit@5", "") == ""
    mixing_table = md.split("Clusters vs user length")[1]
    assert "| S4Rec |" in mixing_table and "| ICLRec |" in mixing_table and "| SASRec |" not in mixing_table
    assert float(rows[0]["cluster ratio"]) > 0 and rows[1].get("cluster ratio", "") == ""
    for png in ("cluster-head-rate", "head-tail"):
        assert open(f"{prefix}-{png}.png", "rb").read(4) == b"\x89PNG"
    assert len(list((tmp_path / "res" / "runs").glob("*.json"))) == 6

    def no_training(**kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(cmp, "run", no_training)
    again = cmp.compare(["S4Rec", "SASRec", "ICLRec"], "tiny", seeds=[1, 2], overrides=over,
                        results_dir=tmp_path / "res", log=lambda *a: None)
    assert again["tests"] == out["tests"]
    with pytest.raises(AssertionError, match="trained again"):  # another config is another run
        cmp.compare(["SASRec"], "tiny", seeds=[1], overrides=tiny_overrides(tiny_data_path, tmp_path, n_layers=1),
                    results_dir=tmp_path / "res", log=lambda *a: None)


def test_head_rates():
    run = {"per_user": {"cluster": [0, 0, 1, 1, 1], "length": [20, 3, 20, 20, 3]}, "head_min_length": 10}
    assert cmp.head_rates(run) == [0.5, pytest.approx(2 / 3)]
    assert cmp.head_rates({"per_user": {"cluster": None}}) is None


def test_cluster_mixing_by_hand_and_against_scipy():
    from scipy import stats

    run = {"per_user": {"cluster": [0, 0, 1, 1, 1], "length": [20, 3, 20, 20, 3]}, "head_min_length": 10}
    mix = cmp.cluster_mixing(run)
    # head share 0.6; cluster head fractions 0.5 (2 users) and 2/3 (3 users)
    assert mix["clusters"] == 2 and mix["head_share"] == pytest.approx(0.6)
    assert mix["spread"] == pytest.approx(np.sqrt((2 * 0.1 ** 2 + 3 * (1 / 15) ** 2) / 5))
    assert mix["random"] == pytest.approx(np.sqrt(0.6 * 0.4 * 1 / 4))
    table = [[1, 1], [2, 1]]  # (head, tail) users of clusters 0 and 1
    assert mix["p_value"] == pytest.approx(stats.chi2_contingency(table, correction=False)[1])
    assert cmp.cluster_mixing({"per_user": {"cluster": None}}) is None
    all_tail = cmp.cluster_mixing({"per_user": {"cluster": [0, 1, 1], "length": [2, 3, 4]}, "head_min_length": 10})
    assert all_tail["spread"] == 0 and np.isnan(all_tail["ratio"]) and all_tail["p_value"] == 1.0
    with pytest.raises(ValueError, match="per-user cluster .* and length"):
        cmp.cluster_mixing({"per_user": {"cluster": [0, 1], "length": [1, 2, 3]}, "head_min_length": 2})


def test_cluster_mixing_chance_level_and_separation():
    rng = np.random.default_rng(0)
    n = 3000
    length = np.where(rng.random(n) < 0.25, 20, 3)
    sizes = np.array([1000, 700, 500, 400, 200, 120, 50, 20, 10])  # unequal, some tiny
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    base = {"head_min_length": 10}
    # the closed-form random level is the root-mean-square spread over random deals of the same sizes
    spreads = [cmp.cluster_mixing({**base, "per_user": {"cluster": cluster, "length": rng.permutation(length)}})
               for _ in range(400)]
    rms = np.sqrt(np.mean([m["spread"] ** 2 for m in spreads]))
    assert rms == pytest.approx(spreads[0]["random"], rel=0.05)
    assert 0.8 < np.mean([m["ratio"] for m in spreads]) < 1.1
    assert np.mean([m["p_value"] < 0.05 for m in spreads]) < 0.1  # the test holds its level under chance
    # clusters that are all head or all tail: far from chance
    order = np.argsort(-length, kind="stable")
    sorted_run = {**base, "per_user": {"cluster": cluster, "length": length[order]}}
    mix = cmp.cluster_mixing(sorted_run)
    assert mix["ratio"] > 10 and mix["p_value"] < 1e-12
    chance_run = {**base, "per_user": {"cluster": cluster, "length": length}}
    md, summary = cmp.mixing_markdown({"sorted": [sorted_run], "chance": [chance_run],
                                       "none": [{"per_user": {"cluster": None}}]})
    assert list(summary) == ["sorted", "chance"] and any(line.startswith("| sorted | 9 |") for line in md)


def test_cli_comparison_arguments(tmp_path, capsys):
    assert main(["--dataset=tiny", "--model=SASRec,Nope", f"--data_path={tmp_path}"]) == 2
    assert "unknown model 'Nope'" in capsys.readouterr().err
    assert main(["--dataset=tiny", "--model=SASRec", "--seeds=1,x", f"--data_path={tmp_path}"]) == 2
    assert "--seeds=1,x: expected comma-separated integers" in capsys.readouterr().err


def test_model_specific_keys_in_a_comparison(tiny_data_path):
    per = cmp.split_overrides(["S4Rec", "SASRec"], "tiny", {"n_clusters": 8, "epochs": 1})
    assert per["S4Rec"] == {"n_clusters": 8, "epochs": 1} and per["SASRec"] == {"epochs": 1}
    with pytest.raises(cmp.ConfigError, match="unknown config key 'n_clusterz'.*did you mean 'n_clusters'"):
        cmp.split_overrides(["S4Rec", "SASRec"], "tiny", {"n_clusterz": 8})


def test_kmeans_variant_by_name(tiny_data_path, tmp_path):
    from s4rec_recbole.runner import build_config, run

    cfg = build_config("S4Rec-kmeans", "tiny", overrides=tiny_overrides(tiny_data_path))
    assert cfg["model"] == "S4Rec" and cfg["clustering"] == "kmeans"
    res = run("S4Rec-kmeans", "tiny", overrides=tiny_overrides(tiny_data_path, tmp_path, n_clusters=8),
              results_dir=tmp_path / "res")
    assert res["model"] == "S4Rec-kmeans" and res["config"]["clustering"] == "kmeans"
    assert res["per_user"]["cluster"] is not None


def test_ablation_variants_switch_off_their_parts(tiny_data_path):
    from s4rec_recbole.runner import build_config

    weights = ("alpha", "beta1", "beta2", "lambda")
    expect = {"S4Rec-SR": (0, 0, 0, 0), "S4Rec-SR+CSD": (0.01, 0, 0.1, 0), "S4Rec-noCSD": (0, 0.1, 0, 1.0),
              "S4Rec-noadv": (0.01, 0.1, 0.1, 0)}
    for name, values in expect.items():
        cfg = build_config(name, "tiny", overrides=tiny_overrides(tiny_data_path))
        assert tuple(cfg[k] for k in weights) == values, name
    # an explicit setting wins over the variant's
    cfg = build_config("S4Rec-SR", "tiny", overrides=tiny_overrides(tiny_data_path, alpha=0.5))
    assert cfg["alpha"] == 0.5 and cfg["beta1"] == 0


def test_paired_t_test_matches_hand_computation():
    from scipy import stats

    def fake(ranks):
        return {"per_user": {"user": [3, 1, 2, 4, 5], "rank": ranks}}

    a = [0, 3, 9, 1, 30]   # users 3 1 2 4 5
    b = [2, 3, 30, 0, 40]
    results = {"A": [fake(a)], "B": [fake(b)]}
    p = cmp.paired_tests(results, (5,))["B"]["ndcg@5"]
    ndcg = lambda r: 1 / np.log2(r + 2) if r < 5 else 0.0
    d = np.array([ndcg(x) - ndcg(y) for x, y in zip(a, b)])
    t = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    assert p == pytest.approx(2 * stats.t.sf(abs(t), df=len(d) - 1))
    assert p == pytest.approx(stats.ttest_rel([ndcg(x) for x in a], [ndcg(y) for y in b]).pvalue)


def test_run_key_ignores_settings_that_leave_a_run_as_before(tiny_data_path, tmp_path):
    import json

    from s4rec_recbole.runner import build_config
    from s4rec_recbole.trainer import plain

    def key(model, **extra):
        return cmp.run_key(build_config(model, "tiny", overrides=tiny_overrides(tiny_data_path, **extra)))

    config = plain(build_config("S4Rec", "tiny", overrides=tiny_overrides(tiny_data_path)).final_config_dict)
    older = {k: v for k, v in config.items()
             if k not in ("aux_warmup", "global_batch_negatives", "trim_padding", "train_samples", "kmeans_redo",
                          "kmeans_max_points_per_centroid", "ckd_space", "time_limit")}
    assert cmp.run_key(older) == cmp.run_key(config) == key("S4Rec", trim_padding=False)  # keys from before
    assert key("S4Rec", time_limit=400) == key("S4Rec")  # where a process stops: the run continues under any limit
    assert key("S4Rec", kmeans_redo=1) == key("S4Rec")  # online clustering runs no K-means
    # K-means settings change the runs that cluster with K-means: ICLRec's and S4Rec's kmeans variant
    assert key("S4Rec", clustering="kmeans", kmeans_redo=1) != key("S4Rec", clustering="kmeans")
    iclrec = plain(build_config("ICLRec", "tiny", overrides=tiny_overrides(tiny_data_path)).final_config_dict)
    new_keys = ("kmeans_redo", "kmeans_max_points_per_centroid", "intent_symmetric", "normalize_intents")
    older_iclrec = {k: v for k, v in iclrec.items() if k not in new_keys}
    assert cmp.run_key(older_iclrec) != cmp.run_key(iclrec)
    for changed in (dict(intent_symmetric=False), dict(normalize_intents=False), dict(kmeans_redo=1)):
        assert key("ICLRec", **changed) != key("ICLRec")
    # faiss' defaults and the view-anchored raw-centroid intent loss are what ICLRec ran before these keys
    assert key("ICLRec", kmeans_redo=1, kmeans_max_points_per_centroid=256, intent_symmetric=False,
               normalize_intents=False) == cmp.run_key(older_iclrec)
    assert key("S4Rec", aux_warmup=2) != key("S4Rec")
    assert key("S4Rec", ckd_space="cos") != key("S4Rec")
    assert key("S4Rec", train_samples="sequence") != key("S4Rec")
    assert key("SASRec", trim_padding=True) != key("SASRec", trim_padding=False)  # other random numbers
    # a run stored under an earlier form of the key is still found through its stored configuration
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "S4Rec-tiny-seed1-oldkey.json").write_text(json.dumps({"config": older}))
    (runs / "S4Rec-tiny-seed1-broken.json").write_text("{")
    assert cmp.stored_run(runs, "S4Rec-tiny-seed1-", cmp.run_key(config)).name == "S4Rec-tiny-seed1-oldkey.json"
    assert cmp.stored_run(runs, "S4Rec-tiny-seed1-", key("S4Rec", aux_warmup=2)) is None


# RecBole's default SASRec (ICLRec's defaults, properties/model/ICLRec.yaml, are the same), the published runs made
# before a tuned model became the dataset's default (properties/dataset/<dataset>/<model>.yaml): the README's flags
# that restore the defaults
RECBOLE_SASREC = {"n_layers": 2, "attn_dropout_prob": 0.5, "learning_rate": 0.001}


@pytest.mark.parametrize("dataset, seed, key", [("amazon-beauty", 2021, "0d26e2392e"),
                                                ("amazon-sports-outdoors", 2022, "e214d3993d")])
def test_sasrec_recbole_variant_is_the_published_untuned_sasrec(dataset, seed, key):
    """``SASRec-recbole`` asks for the very runs that the README's flags repeat (same key), where a tuned SASRec
    is the dataset's default, and explicit flags still win over it."""
    from s4rec_recbole.runner import build_config

    config = build_config("SASRec-recbole", dataset, overrides={"seed": seed})
    assert config["model"] == "SASRec" and cmp.run_key(config) == key
    assert cmp.run_key(build_config("SASRec", dataset, overrides={"seed": seed})) != key  # the tuned default
    assert build_config("SASRec-recbole", dataset, overrides={"n_layers": 3})["n_layers"] == 3


@pytest.mark.parametrize("model", ["CL4SRec", "S4Rec", "S4Rec-kmeans"])
def test_untuned_flags_leave_the_other_models_runs_alone(model):
    """The flags that give ICLRec (and SASRec) their own defaults back on Beauty are the other plugin models'
    defaults: added to a comparison, they do not change those models' runs."""
    from s4rec_recbole.runner import build_config

    plain = build_config(model, "amazon-beauty", overrides={"seed": 2020})
    assert cmp.run_key(build_config(model, "amazon-beauty", overrides={"seed": 2020, **RECBOLE_SASREC})) == \
        cmp.run_key(plain)


def test_sasrec_recbole_variant_trains_under_its_name(tiny_data_path, tmp_path):
    from s4rec_recbole.runner import run

    res = run("SASRec-recbole", "tiny", overrides=tiny_overrides(tiny_data_path, tmp_path),
              results_dir=tmp_path / "res")
    assert res["model"] == "SASRec-recbole" and res["config"]["model"] == "SASRec"
    assert (res["config"]["n_layers"], res["config"]["learning_rate"]) == (2, 0.001) and res["config"]["trim_padding"]
    assert [p.name.startswith("SASRec-recbole-tiny-") for p in (tmp_path / "res").glob("*.json")] == [True]


@pytest.mark.parametrize("model, dataset, seed, key, flags", [
    ("S4Rec", "amazon-sports-outdoors", 2021, "5b54420181", {}),
    ("CL4SRec", "amazon-beauty", 2020, "3c938d669a", {}),
    ("ICLRec", "amazon-sports-outdoors", 2020, "34dbd14024", {}),
    ("ICLRec", "amazon-beauty", 2021, "214ae59cd9", RECBOLE_SASREC),
    ("ICLRec", "amazon-beauty", 2020, "4f329ba719", {}),    # the search's trial 2, shipped as the tuned default
    ("ICLRec", "amazon-beauty", 2022, "da8dd9cf50", {}),    # the tuned default's seed 2022
    ("SASRec", "amazon-beauty", 2021, "af24622a0c", {}),
    ("SASRec", "amazon-beauty", 2021, "0d26e2392e", RECBOLE_SASREC),
    ("SASRec", "amazon-sports-outdoors", 2022, "e214d3993d", RECBOLE_SASREC),
    ("SASRec", "amazon-sports-outdoors", 2022, "f7f795845e", {}),
    ("S4Rec-kmeans", "amazon-sports-outdoors", 2022, "d8269d5249", {}),
    ("S4Rec", "amazon-beauty", 2020, "6c747ea57a", {"mask_history": False}),    # selected on unmasked validation
    ("S4Rec", "amazon-beauty", 2022, "329c08ab45", {"mask_history": False}),
    ("S4Rec", "amazon-beauty", 2021, "c8fcd93cb1", {"n_clusters": 32}),    # the K sweep
    ("S4Rec-SR", "ml-1m", 2020, "4b289b976a", {}),    # ML-1M on the CPU, whole sequences: the ML-1M defaults
    ("S4Rec-SR", "ml-1m", 2021, "cba99b2810", {}),
    ("S4Rec", "ml-1m", 2020, "b1ab23ad9c", {}),    # mean pooling, cosine contrast at 0.1
    ("S4Rec", "ml-1m", 2020, "04787cf80e", {"seq_pooling": "last"}),    # labels fixed, cosine, last position
    ("ICLRec", "ml-1m", 2020, "652b240a2f", {}),
    ("CL4SRec", "ml-1m", 2020, "eb820ba95d", {}),    # mean pooling
    ("S4Rec-noadv", "ml-1m", 2020, "3121d41b02", {}),    # S4Rec's ML-1M defaults, lambda = 0
    ("S4Rec-kmeans", "ml-1m", 2020, "0cd9d6fd83", {}),    # S4Rec's ML-1M defaults, per-epoch K-means
    ("SASRec", "amazon-beauty", 2020, "5e84653b80", {**RECBOLE_SASREC, "mask_history": False}),
    ("SASRec", "amazon-beauty", 2022, "61fc1ce805", {**RECBOLE_SASREC, "mask_history": False})])
def test_published_default_runs_keep_their_key(model, dataset, seed, key, flags):
    """A run made with no flags but --model/--dataset/--seeds (and the flags the README gives to repeat it: for a
    model whose dataset default changed since, its old defaults; for a run selected under RecBole's protocol,
    --mask_history=False; for a K-sweep run, its --n_clusters; for an ML-1M run, the flags that differ from the ML-1M
    defaults) is still the run that the same command asks for: a setting added to the project must not change the key
    of the runs recorded before it."""
    import json

    from conftest import REPO
    from s4rec_recbole.runner import build_config

    sys.path.insert(0, str(REPO / "benchmarks"))
    from publish_results import published_name

    name = published_name(f"{model}-{dataset}-seed{seed}-{key}.json", {"mask_history": flags.get("mask_history", True)})
    stored = json.loads((REPO / "results" / "published" / name).read_text())
    assert cmp.run_key(stored["config"]) == key
    assert cmp.run_key(build_config(model, dataset, overrides={"seed": seed, **flags})) == key
    # the flags matter: without them the command asks for another run (the tuned default, masked, K = 128, prefixes)
    if flags:
        assert cmp.run_key(build_config(model, dataset, overrides={"seed": seed})) != key


def test_ratio_table_uses_unrounded_means():
    def fake(hit5):
        group = {"hit@5": hit5, "ndcg@5": hit5 / 2}
        return {"test_by_group": {"overall": group, "head": group, "tail": group,
                                  "users": {"overall": 3, "head": 1, "tail": 2}}, "head_min_length": 8}

    results = {"A": [fake(0.02751), fake(0.02749)], "B": [fake(0.026241)], "C": [fake(0.0)]}
    md, rows = cmp.tables(results, (5,), {}, "history masked")
    assert rows[1]["ratio hit@5"] == pytest.approx(0.0275 / 0.026241)       # 1.048, where 0.0275 / 0.0262 = 1.050
    assert "| B | 1.048 | 1.048 |" in md and "ratio hit@5" not in rows[0]
    assert np.isnan(rows[2]["ratio ndcg@5"]) and "| C | nan | nan |" in md
    assert "Ratio of A's overall mean" not in cmp.tables({"A": results["A"]}, (5,), {}, "history masked")[0]


def test_tail_head_gains_bootstrap():
    rng = np.random.default_rng(0)
    n = 400
    users, lengths = rng.permutation(n) + 1, np.where(np.arange(n) < 100, 20, 3)   # 100 head, 300 tail
    base = rng.integers(0, 40, n)

    def fake(ranks):
        return {"per_user": {"user": users.tolist(), "rank": list(ranks), "length": lengths.tolist()},
                "head_min_length": 8}

    better_tail = np.where(lengths < 8, base // 2, base)    # halves the tail users' ranks only
    gains = cmp.tail_head_gains({"A": [fake(better_tail)], "B": [fake(base)]}, (5, 20), n_boot=500)
    g = gains["B"]["hit@20"]
    tail = lengths < 8
    assert g["tail"] == pytest.approx((better_tail[tail] < 20).mean() / (base[tail] < 20).mean() - 1)
    assert g["head"] == 0 and g["diff"] == g["tail"] > 0.3
    assert 0 < g["low"] < g["diff"] < g["high"] and g["p"] < 0.01
    same = cmp.tail_head_gains({"A": [fake(base)], "B": [fake(base)]}, (5,), n_boot=200)["B"]["ndcg@5"]
    assert same["diff"] == same["low"] == same["high"] == 0 and same["p"] == 1
    # the same draws whatever else is in the table (equal up to BLAS rounding: the resampled means are one
    # matrix product over all columns, whose blocking depends on their number); no head users -> nothing to compare
    again = cmp.tail_head_gains({"A": [fake(better_tail)], "B": [fake(base)], "C": [fake(base)]}, (5, 20), n_boot=500)
    assert again["B"].keys() == gains["B"].keys()
    for met, g in gains["B"].items():
        assert again["B"][met] == pytest.approx(g, rel=1e-12, abs=1e-15)
    all_tail = {"A": [dict(fake(base), head_min_length=100)], "B": [dict(fake(base), head_min_length=100)]}
    assert cmp.tail_head_gains(all_tail, (5,)) == {}
