"""The benchmark runner and its comparison: a regression is flagged, an unchanged run passes."""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest

from gpugraph.tools import bench


def result(speedup=2.0, peak=100 * 2**20, triangles=1234):
    return {
        "suite": "quick",
        "device": "cpu",
        "cases": [
            {
                "name": "a",
                "seconds": 1.0,
                "reference": "r",
                "reference_seconds": speedup,
                "speedup": speedup,
                "peak_bytes": peak,
                "counters": {"triangles": triangles},
            },
            {
                "name": "b",
                "seconds": 1.0,
                "reference": "none",
                "reference_seconds": None,
                "speedup": None,
                "peak_bytes": None,
                "counters": {},
            },
        ],
    }


@pytest.mark.parametrize(
    "change,regressed,verdict",
    [
        ({}, False, "ok"),
        ({"speedup": 1.7}, False, "ok"),  # within the factor 1.25
        ({"speedup": 1.5}, True, "slower"),
        ({"peak": 150 * 2**20}, True, "more memory"),  # over 1.25 x 100 MiB + 16 MiB of noise
        ({"peak": 120 * 2**20}, False, "ok"),
        ({"triangles": 1235}, True, "counters changed: triangles 1234 -> 1235"),
    ],
)
def test_compare_flags_what_regressed(change, regressed, verdict):
    lines, failed = bench.compare(result(), result(**change))
    assert failed is regressed
    assert verdict in lines[1]
    assert lines[2].endswith("ok")  # a case without a reference or peak compares its counters only


def test_compare_ignores_times_when_asked_and_lists_one_sided_cases():
    new = result(speedup=0.5)
    new["cases"].append({"name": "c", "speedup": 1.0, "peak_bytes": 1, "counters": {}})
    lines, failed = bench.compare(result(), new, ignore_times=True)
    assert not failed and "only in new run" in lines[-1]
    with pytest.raises(ValueError, match="factor must be at least 1"):
        bench.compare(result(), result(), factor=0.9)


def timed(ours, ref):
    return {
        "suite": "quick",
        "device": "cpu",
        "cases": [
            {
                "name": "a",
                "seconds": float(np.median(ours)),
                "reference_seconds": float(np.median(ref)),
                "speedup": float(np.median(ref) / np.median(ours)),
                "times": ours,
                "reference_times": ref,
                "peak_bytes": None,
                "counters": {},
            }
        ],
    }


@pytest.mark.parametrize("n", range(3, 16))
def test_the_speedup_interval_is_the_narrowest_with_90_percent_coverage(n):
    from scipy.stats import binom

    ratios = np.arange(1.0, n + 1)  # reference times 1..n against ours 1: ratio i in round i
    interval = bench.speedup_interval({"times": [1.0] * n, "reference_times": ratios.tolist()})
    coverage = [1 - 2 * binom.cdf(j - 1, n, 0.5) for j in range(1, n // 2 + 1)]  # of [r_(j), r_(n+1-j)]
    if coverage[0] < 0.9:
        assert interval is None  # too few rounds, and no min/max to fall back on
        return
    j = max(j for j, c in enumerate(coverage, 1) if c >= 0.9)
    assert interval == (ratios[j - 1], ratios[n - j])


def test_a_noisy_run_is_inconclusive_and_a_consistently_slow_one_slower(capsys):
    base = timed([1.0] * 5, [2.0] * 5)  # speed-up 2: the threshold at factor 1.25 is 1.6
    noisy = timed([1.0] * 5, [1.0, 1.2, 1.4, 2.2, 3.0])  # median 1.4x, but one round in five at 3x
    lines, failed = bench.compare(base, noisy)
    assert not failed and "inconclusive" in lines[1] and "1.40x [1.00-3.00]" in lines[1]
    assert "1 case(s) inconclusive" in lines[-1]
    slow = timed([1.0] * 5, [1.0, 1.1, 1.2, 1.3, 1.5])  # every round below 1.6x
    lines, failed = bench.compare(base, slow)
    assert failed and lines[1].endswith("slower") and "inconclusive" not in lines[-1]
    fine = timed([1.0] * 5, [1.0, 1.7, 1.9, 2.0, 2.5])
    lines, failed = bench.compare(base, fine)
    assert not failed and lines[1].endswith("ok")
    # a result without per-round times: the envelope of its min and max
    old = {
        **noisy["cases"][0],
        "seconds_min": 0.9,
        "seconds_max": 1.1,
        "reference_seconds_min": 1.0,
        "reference_seconds_max": 3.0,
    }
    del old["times"], old["reference_times"]
    assert bench.speedup_interval(old) == pytest.approx((1.0 / 1.1, 3.0 / 0.9))


def test_a_case_is_timed_beside_its_reference():
    case = bench.Case("sum", lambda: sum(range(1000)), lambda: sum(list(range(1000))), "list", lambda v: {"value": v})
    out = bench.run_case(case, rounds=3, device="cpu")
    assert out["counters"] == {"value": 499500} and out["rounds"] == 3
    assert out["speedup"] == pytest.approx(out["reference_seconds"] / out["seconds"])
    assert out["seconds_min"] <= out["seconds"] <= out["seconds_max"]
    assert len(out["times"]) == len(out["reference_times"]) == 3 and out["seconds"] == np.median(out["times"])


def test_the_cli_exit_status_follows_the_comparison(tmp_path):
    base, worse = result(), result(triangles=1)
    (tmp_path / "base.json").write_text(json.dumps(base))
    (tmp_path / "same.json").write_text(json.dumps(copy.deepcopy(base)))
    (tmp_path / "worse.json").write_text(json.dumps(worse))

    def compare(name):
        return subprocess.run(
            [sys.executable, "-m", "gpugraph", "bench", "compare", str(tmp_path / "base.json"), str(tmp_path / name)],
            capture_output=True,
            text=True,
            check=False,
        )

    same, bad = compare("same.json"), compare("worse.json")
    assert same.returncode == 0 and same.stdout.strip().endswith("no regression")
    assert bad.returncode == 1 and "counters changed" in bad.stdout


def test_the_stored_baseline_covers_the_quick_suite():
    from pathlib import Path

    baseline = bench.load(Path(__file__).parents[2] / "benchmarks" / "baselines" / "cpu-2core.json")
    assert baseline["suite"] == "quick" and baseline["machine"]["cores"] >= 1
    names = {c["name"] for c in baseline["cases"]}
    assert names == {c.name for c in bench.cases("quick", "cpu")}


# ---- users' regression tests: gpugraph.testing and the gg_baseline fixture ------------------


def test_assert_curve_close_names_the_layers_that_moved(tmp_path):
    import gpugraph as gg
    from gpugraph.testing import assert_curve_close, assert_similarity_close

    base = gg.LayerCurve(["a", "b", "c"], [[0.1, 0.5, 0.8], [0.1, 0.5, 0.8]])
    base.to_json(tmp_path / "base.json")
    assert_curve_close(gg.LayerCurve(["a", "b", "c"], [[0.11, 0.49, 0.8]]), tmp_path / "base.json")
    worse = gg.LayerCurve(["a", "b", "c"], [[0.1, 0.4, 0.9]])
    with pytest.raises(
        AssertionError, match=r"1 of 3 layers moved beyond the tolerance \(lower\):\n.*\n  b .*-0\.1000"
    ):
        assert_curve_close(worse, base, direction="lower")  # c rose: not a failure downwards
    with pytest.raises(AssertionError, match=r"2 of 3 layers moved"):
        assert_curve_close(worse, base)
    with pytest.raises(AssertionError, match="different layers"):
        assert_curve_close(gg.LayerCurve(["a", "b"], [[0.1, 0.5]]), base)
    m = gg.SimilarityMatrix([[1.0, 0.2], [0.3, 1.0]], ["x", "y"], ["u", "v"], "lsim")
    assert_similarity_close(m, m.to_json())
    with pytest.raises(AssertionError, match=r"1 of 4 entries moved.*\n  y x u: 0\.3000 -> 0\.5000"):
        assert_similarity_close(gg.SimilarityMatrix([[1.0, 0.2], [0.5, 1.0]], ["x", "y"], ["u", "v"], "lsim"), m)


def test_curve_tolerance_can_take_the_subsets_spread_into_account():
    """sigma widens a layer's tolerance by standard errors of the difference of the means,
    worked out by hand: baseline subsets 0.5, 0.6 and new 0.45, 0.55 (sample variance 0.005
    each, two subsets): se = sqrt(0.005 / 2 + 0.005 / 2) = 0.0707 for a move of -0.05."""
    import gpugraph as gg
    from gpugraph.testing import assert_curve_close

    base = gg.LayerCurve(["a", "b"], [[0.2, 0.5], [0.2, 0.6]])
    new = gg.LayerCurve(["a", "b"], [[0.2, 0.45], [0.2, 0.55]])
    with pytest.raises(AssertionError, match=r"1 of 2 layers moved.*\n.*\n  b .*-0\.0500   0\.0100"):
        assert_curve_close(new, base, atol=0.01)
    with pytest.raises(AssertionError, match=r"  b .*-0\.0500   0\.0454"):  # 0.01 + 0.5 x 0.0707
        assert_curve_close(new, base, atol=0.01, sigma=0.5)
    assert_curve_close(new, base, atol=0.01, sigma=1.0)  # tolerance 0.0807
    one = gg.LayerCurve(["a", "b"], [[0.2, 0.45]])  # a single subset has no spread: adds nothing of its own
    with pytest.raises(AssertionError, match=r"  b .*-0\.1000   0\.0600"):  # 0.01 + 1 x sqrt(0.005 / 2)
        assert_curve_close(one, base, atol=0.01, sigma=1.0)
    with pytest.raises(ValueError, match="sigma must be non-negative"):
        assert_curve_close(new, base, sigma=-1)


def test_json_round_trips_are_exact(tmp_path):
    import gpugraph as gg

    rng = np.random.default_rng(0)
    c = gg.LayerCurve(["a", "b"], rng.random((3, 2)), {"k": 3, "final": ["b"]})
    back = gg.LayerCurve.from_json(c.to_json())
    assert np.array_equal(back.values, c.values) and back.params == c.params
    m = gg.SimilarityMatrix(rng.random((2, 3)), ["a", "b"], ["c", "d", "e"], "cka", {"k": None})
    back = gg.SimilarityMatrix.from_json(m.to_json())
    assert np.array_equal(back.values, m.values) and back.params == m.params


PLUGIN_TEST = """
import gpugraph as gg

def test_curve(gg_baseline):
    gg_baseline.check_curve(gg.LayerCurve(["a", "b"], [[0.1, VALUE]]), atol=0.01)
"""


def test_the_pytest_plugin_stores_then_checks_a_baseline(pytester):
    pytester.makepyfile(test_model=PLUGIN_TEST.replace("VALUE", "0.5"))
    missing = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    missing.assert_outcomes(failed=1)
    assert "run pytest --gg-update-baselines once" in missing.stdout.str()
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--gg-update-baselines").assert_outcomes(passed=1)
    assert (pytester.path / "gg_baselines" / "test_curve.json").is_file()
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    pytester.makepyfile(test_model=PLUGIN_TEST.replace("VALUE", "0.45"))  # a layer got worse
    worse = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    worse.assert_outcomes(failed=1)
    assert "1 of 2 layers moved beyond the tolerance" in worse.stdout.str()
    assert "accept it as the new baseline with" in worse.stdout.str()
    assert "pytest test_model.py::test_curve --gg-update-baselines" in worse.stdout.str()
    pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "test_model.py::test_curve", "--gg-update-baselines"
    ).assert_outcomes(passed=1)  # the command it gave
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_the_example_regression_test_guards_the_demo_network():
    from pathlib import Path

    example = Path(__file__).parents[2] / "examples" / "test_demo_regression.py"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(example)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:]


def test_bench_runs_only_the_cases_asked_for(tmp_path, capsys):
    from gpugraph.tools.cli import main

    assert main(["bench", "--cases", "motifs,triangles", "--rounds", "1", "--json", str(tmp_path / "b.json")]) == 0
    names = [c["name"] for c in json.loads((tmp_path / "b.json").read_text())["cases"]]
    assert [n.split()[0] for n in names] == ["triangles", "motifs"]
    capsys.readouterr()
    assert main(["bench", "--cases", "knn,motifs"]) == 1
    err = capsys.readouterr().err
    assert "the quick suite has no case of ['knn']; its cases measure: knn_graph, layer_similarity" in err
