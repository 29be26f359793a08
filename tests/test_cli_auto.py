"""`mrdiff recon --auto` / held-out error end to end on tiny mock files, and bad tuning requests."""

import json

import h5py
import numpy as np
import pytest

from recon.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_recon_auto_writes_chosen_params_and_heldout_error(capsys, tmp_path, multicoil_h5):
    out = tmp_path / "auto.h5"
    argv = ["recon", multicoil_h5, "--method", "sense", "--out", out, "--accel", "2"]
    code, stdout, err = run(capsys, *argv, "--center-fraction", "0.125", "--auto", "--auto-folds", "2")
    assert code == 0, err
    report = json.loads(stdout.strip().splitlines()[-1])["files"][str(out)]
    chosen = report["auto"]["chosen"]
    assert set(chosen) == {"iters"} and 1 <= chosen["iters"] <= 30
    assert report["auto"]["start"] == {"iters": 5}  # the value the search had to beat (CG-SENSE's default)
    assert report["auto"]["trials"] >= 2 * 7 // 2 and report["auto"]["seconds"] >= 0
    assert 0 < report["heldout_error"] < 1.5
    lines = [x for x in err.splitlines() if x.startswith(f"mrdiff recon: tuning {multicoil_h5.name}: iters=")]
    assert len(lines) * 2 == report["auto"]["trials"]  # one stderr line per candidate (2 folds each)
    with h5py.File(out) as f:
        assert json.loads(f.attrs["params"])["iters"] == chosen["iters"]
        assert json.loads(f.attrs["auto"])["chosen"] == chosen
        assert f["heldout_error"].shape == (2,) and np.isfinite(f["heldout_error"][()]).all()
        assert float(f.attrs["heldout_error"]) == pytest.approx(report["heldout_error"], rel=1e-4)


def test_recon_auto_resumes_its_search_with_resume(capsys, tmp_path, multicoil_h5, monkeypatch):
    """Killed after tuning (here: before the write), `recon --auto` leaves OUT.tuning/; `--resume` reads
    the scored candidates back instead of running them, and the log goes once the output is written."""
    import recon.verbs.recon as verb

    out, logs = tmp_path / "auto.h5", tmp_path / "auto.h5.tuning"
    argv = [
        "recon",
        multicoil_h5,
        "--method",
        "sense",
        "--out",
        out,
        "--accel",
        "2",
        "--center-fraction",
        "0.125",
    ]
    argv += ["--auto", "--auto-folds", "2", "--auto-points", "3"]

    def killed(*_, **__):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(verb, "write_reconstruction", killed)
        assert run(capsys, *argv)[0] == 130  # interrupted
    assert not out.exists() and len(list(logs.glob("method.jsonl"))) == 1
    scored = len((logs / "method.jsonl").read_text().splitlines()) - 1
    code, stdout, err = run(capsys, *argv, "--resume")
    assert code == 0, err
    auto = json.loads(stdout.strip().splitlines()[-1])["files"][str(out)]["auto"]
    assert auto["trials"] == 0 and auto["reused_trials"] == 2 * scored >= 6
    assert "tuning" not in err and not logs.exists()
    out.unlink()
    with monkeypatch.context() as m:
        m.setattr(verb, "write_reconstruction", killed)
        assert run(capsys, *argv)[0] == 130  # interrupted
    code, stdout, err = run(capsys, *argv)  # without --resume the search starts again
    assert code == 0 and json.loads(stdout.strip().splitlines()[-1])["files"][str(out)]["auto"]["trials"] > 0


FLAGS = ["--accel", "2", "--center-fraction", "0.125", "--holdout-fraction", "0.3"]


def test_heldout_error_ranks_zero_filled_last(capsys, tmp_path, multicoil_h5):
    errs = {}
    for method in ("zf", "cs-l1"):
        out = tmp_path / f"{method}.h5"
        code, stdout, err = run(capsys, "recon", multicoil_h5, "--method", method, "--out", out, *FLAGS)
        assert code == 0, err
        errs[method] = json.loads(stdout.strip().splitlines()[-1])["files"][str(out)]["heldout_error"]
    assert errs["zf"] > 0.8 and errs["cs-l1"] < 0.85 * errs["zf"], errs


@pytest.mark.parametrize("folds, score", [("1", "mean"), ("3", "mean"), ("3", "pooled")])
def test_recorded_heldout_error_scores_every_fold(capsys, tmp_path, multicoil_h5, folds, score):
    """``--heldout-folds N`` records, per slice, the mean of the N folds' errors (or with ``--auto-score
    pooled`` their energy-pooled error), each fold reconstructed without its held-out lines."""
    import mrdiff.pipeline as pipeline
    from mrdiff.baselines import BASELINES
    from mrdiff.io import open_volume
    from mrdiff.tuning import Split, fold_parts, holdout_sets

    out = tmp_path / "h.h5"
    argv = ["recon", multicoil_h5, "--method", "cs-l1", "--out", out, *FLAGS, "--heldout-folds", folds]
    code, _, err = run(capsys, *argv, "--auto-score", score)
    assert code == 0, err
    info = open_volume(multicoil_h5)
    mask = pipeline.volume_mask(info, pipeline.MaskSpec("random", 2, 0.125))
    y, op = pipeline._batch(info, [0, 1], mask, "cpu", {})
    sets = holdout_sets(mask, tuple(y.shape[-2:]), Split(0.3, int(folds), 0))
    num, den = fold_parts(lambda yf, fit, p: BASELINES["cs-l1"](yf, fit), y, op, {}, sets)
    pooled, mean = (num.sum(0) / den.sum(0)).numpy(), (num / den).mean(0).numpy()
    expected, other = (pooled, mean) if score == "pooled" else (mean, pooled)
    assert folds == "1" or not np.allclose(other, expected, rtol=2e-3)  # the two scores are told apart
    with h5py.File(out) as f:
        np.testing.assert_allclose(f["heldout_error"][()], expected, rtol=2e-3)  # CS iterations in float32
        assert json.loads(f.attrs["heldout"]) == {
            "fraction": 0.3,
            "folds": int(folds),
            "score": score,
            "seed": 0,
            "region": "outer",
        }


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--tune", "foo"], "cannot tune foo"),
        (["--tune", "iters=5:5"], "empty or invalid range"),
        (["--tune", "iters=5"], "NAME=LO:HI"),
        (["--auto", "--method", "zf"], "no tunable"),
        (["--auto", "--auto-points", "1"], "--auto-points"),
        (["--auto", "--auto-samples", "0"], "--auto-samples"),
        (["--auto", "--auto-folds", "0"], "--auto-folds"),
        (["--auto", "--auto-fallback", "dds"], "fallback must be a classical method"),
        (["--heldout-folds", "x"], "--heldout-folds"),
        (["--auto", "--holdout-region", "centre", "--mask", "poisson"], "line mask"),
        # the held-out record alone (no --auto) asks for the region too: an error, not a silent null
        (["--holdout-region", "centre", "--mask", "poisson"], "line mask"),
    ],
)
def test_bad_tuning_requests(capsys, tmp_path, multicoil_h5, extra, message):
    out = tmp_path / "bad.h5"
    argv = ["recon", multicoil_h5, "--method", "sense", "--out", out, *extra]
    if "zf" in extra:
        argv = ["recon", multicoil_h5, "--out", out, *extra]
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*.tuning"))


def test_auto_with_nothing_to_hold_out(capsys, tmp_path, make_h5):
    mask = np.zeros(32, bool)
    mask[12:20] = True  # only the fully sampled centre: nothing can be held out
    path = make_h5("centre_only.h5", layout="multicoil", mask_1d=mask)
    out = tmp_path / "o" / "r.h5"
    code, _, err = run(capsys, "recon", path, "--method", "sense", "--out", out, "--auto")
    assert code == 2 and "nothing to hold out" in err and not out.exists()
    assert not (out.parent / "r.h5.tuning").exists()
    code, stdout, err = run(
        capsys, "recon", path, "--method", "sense", "--out", out
    )  # plain recon still runs
    assert code == 0, err
    report = json.loads(stdout.strip().splitlines()[-1])["files"][str(out)]
    assert report["heldout_error"] is None and "nothing to hold out" in report["heldout_note"]
    with h5py.File(out) as f:
        assert "nothing to hold out" in f.attrs["heldout_note"]


def test_bench_auto_tunes_on_the_volume_centre_not_the_scored_subset(capsys, tmp_path, make_h5):
    """`--slices-per-volume` spreads the scored slices; `--auto` still tunes on the volume's central
    slices, as `mrdiff recon --auto` on the whole file does, and the record says which."""
    data = tmp_path / "val"
    data.mkdir()
    make_h5("val/v0.h5", layout="prepared", slices=7, coils=4)
    argv = ["bench", "--data", data, "--methods", "sense", "--masks", "random", "--accels", "2"]
    argv += ["--out", tmp_path / "b", "--slices-per-volume", "2", "--auto", "--auto-slices", "1"]
    argv += ["--auto-folds", "1", "--auto-points", "3"]
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    row = json.loads((tmp_path / "b" / "cells" / "sense+auto__random__2x__s0.json").read_text())["volumes"][0]
    assert row["auto"]["tuned_slices"] == [3] and 3 not in row["slices"]  # the middle of 0..6, not scored


def test_bench_auto_resumes_a_search_cut_off_mid_cell(capsys, tmp_path, make_h5):
    """The cell's candidates are kept under OUT/tuning/; a cell that did not finish (here: its record
    removed) tunes again from them without rerunning one, and chooses the same."""
    data = tmp_path / "val"
    data.mkdir()
    make_h5("val/v0.h5", layout="prepared", slices=2, coils=4)
    out = tmp_path / "bench"
    argv = ["bench", "--data", data, "--methods", "sense", "--masks", "random", "--accels", "2", "--out", out]
    argv += ["--auto", "--auto-folds", "1", "--auto-points", "3"]
    cell = out / "cells" / "sense+auto__random__2x__s0.json"
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    first = json.loads(cell.read_text())["volumes"][0]["auto"]
    logs = list((out / "tuning" / cell.stem).glob("v0.method.jsonl"))
    assert (
        len(logs) == 1 and len(logs[0].read_text().splitlines()) == 1 + first["trials"]
    )  # header + 1 fold each
    cell.unlink()
    events = len((out / "bench.log").read_text().splitlines())
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    again = json.loads(cell.read_text())["volumes"][0]["auto"]
    assert again["chosen"] == first["chosen"] and again["trials"] == 0
    assert again["reused_trials"] == first["trials"]
    new = [json.loads(x) for x in (out / "bench.log").read_text().splitlines()[events:]]
    assert not [e for e in new if "tuning" in e]  # nothing was reconstructed again


def test_bench_auto_rows_record_their_choice(capsys, tmp_path, make_h5):
    data = tmp_path / "val"
    data.mkdir()
    make_h5("val/v0.h5", layout="prepared", slices=2, coils=4)
    out = tmp_path / "bench"
    argv = ["bench", "--data", data, "--methods", "sense", "--masks", "random", "--accels", "2", "--out", out]
    code, stdout, err = run(capsys, *argv, "--auto", "--auto-folds", "1", "--auto-points", "3")
    assert code == 0, err
    record = json.loads((out / "cells" / "sense+auto__random__2x__s0.json").read_text())
    row = record["volumes"][0]
    assert set(row["auto"]["chosen"]) == {"iters"} and row["auto"]["trials"] >= 3
    assert record["method"]["auto"]["folds"] == 1 and row["auto"]["folds_used"] == 1
    log = [json.loads(line) for line in (out / "bench.log").read_text().splitlines()]
    tried = [e for e in log if "tuning" in e]  # the search is followed candidate by candidate
    assert len(tried) == row["auto"]["trials"] and all(set(e["tuning"]) == {"iters"} for e in tried)
    # and the reconstruction slice by slice, without a terminal
    assert [(e["slices_done"], e["of"]) for e in log if "slices_done" in e] == [(1, 2), (2, 2)]
    code, stdout, _ = run(capsys, *argv, "--auto", "--auto-folds", "1", "--auto-points", "3")
    assert code == 0 and json.loads(stdout)["skipped"] == 1  # same settings: reused
    code, stdout, err = run(capsys, *argv, "--auto", "--auto-folds", "all", "--auto-score", "pooled")
    assert code == 0 and json.loads(stdout)["skipped"] == 0, err  # new settings: run again
    record = json.loads((out / "cells" / "sense+auto__random__2x__s0.json").read_text())
    assert record["method"]["auto"]["folds"] == 0 and record["method"]["auto"]["pool"] is True
    code, _, err = run(capsys, *argv, "--tune", "lamda")
    assert code == 2 and "cannot tune lamda" in err


def test_auto_summary_names_cover_folds_and_pooled_score():
    from mrdiff.pipeline import AutoSpec
    from mrdiff.tuning import COVER, Split, TuneResult
    from recon.verbs.autotune import summary

    result = TuneResult({"iters": 3}, {"iters": 3}, 0.1, 0.2, 18, 1.0)
    row = summary(result, AutoSpec(split=Split(0.1, COVER, 0, pool=True)), [4])
    assert row["folds"] == "all" and row["score"] == "pooled" and row["chosen"] == {"iters": 3}
    plain = summary(result, AutoSpec(), [4])
    assert plain["folds"] == "auto" and plain["score"] == "mean"
    three = summary(TuneResult({}, {}, 0.1, 0.2, 6, 1.0, folds=3), AutoSpec(split=Split(0.1, 3, 0)), [4])
    assert three["folds"] == 3 and three["folds_used"] == 3


def test_default_auto_folds_cover_every_outer_line(capsys, tmp_path, multicoil_h5):
    """By default `--auto` holds out every measured line outside the centre once (K-fold over all lines)."""
    import mrdiff.pipeline as pipeline
    from mrdiff.io import open_volume
    from mrdiff.tuning import COVER, Split, holdout_sets

    out = tmp_path / "auto.h5"
    argv = ["recon", multicoil_h5, "--method", "sense", "--out", out, "--accel", "2"]
    code, stdout, err = run(capsys, *argv, "--center-fraction", "0.125", "--auto", "--auto-points", "3")
    assert code == 0, err
    report = json.loads(stdout.strip().splitlines()[-1])["files"][str(out)]["auto"]
    info = open_volume(multicoil_h5)
    mask = pipeline.volume_mask(info, pipeline.MaskSpec("random", 2, 0.125))
    cover = holdout_sets(mask, tuple(info.shape[-2:]), Split(0.1, COVER, 0))
    assert report["folds"] == "auto" and report["folds_used"] == len(cover) > 3
    assert report["trials"] % len(cover) == 0


def test_centre_region_tunes_on_centre_lines_and_says_so(capsys, tmp_path, multicoil_h5):
    """`--holdout-region centre` holds out single lines of the fully sampled centre (one per fold), for
    the search and for the recorded error, and the report and the bench row name the region."""
    import mrdiff.pipeline as pipeline
    from mrdiff.io import open_volume
    from mrdiff.tuning import AUTO, CENTRE, Split, holdout_sets

    out = tmp_path / "auto.h5"
    argv = ["recon", multicoil_h5, "--method", "sense", "--out", out, "--accel", "2"]
    argv += ["--center-fraction", "0.25"]
    code, stdout, err = run(capsys, *argv, "--auto", "--auto-points", "3", "--holdout-region", "centre")
    assert code == 0, err
    report = json.loads(stdout.strip().splitlines()[-1])["files"][str(out)]
    info = open_volume(multicoil_h5)
    mask = pipeline.volume_mask(info, pipeline.MaskSpec("random", 2, 0.25))
    sets = holdout_sets(mask, tuple(info.shape[-2:]), Split(0.1, AUTO, 0, region=CENTRE))
    assert report["auto"]["region"] == "centre" and report["auto"]["folds_used"] == len(sets) >= 3
    with h5py.File(out) as f:
        assert json.loads(f.attrs["heldout"])["region"] == "centre"
    data = tmp_path / "val"
    data.mkdir()
    (data / "v0.h5").symlink_to(multicoil_h5)
    bench = ["bench", "--data", data, "--methods", "sense", "--masks", "equispaced", "--accels", "2"]
    bench += ["--out", tmp_path / "b", "--auto", "--auto-points", "3", "--holdout-region", "centre"]
    code, _, err = run(capsys, *bench)
    assert code == 0, err
    record = json.loads((tmp_path / "b" / "cells" / "sense+auto__equispaced__2x__s0.json").read_text())
    assert record["method"]["auto"]["region"] == "centre"


def test_a_trial_log_depends_on_the_trial_samples_not_the_final_k():
    """With ``--auto-samples`` the trials average that many samples whatever the final K, so a search's
    log stays valid when only the final K changes; without it, the trials use the final K."""
    from dataclasses import replace

    from mrdiff.pipeline import AutoSpec, MaskSpec, MethodSpec
    from mrdiff.provenance import tuning_context

    def context(samples: int, auto: AutoSpec) -> dict:
        spec = MethodSpec("pocs", {}, samples=samples)
        return tuning_context(spec, MaskSpec(), False, auto, "v.h5", [0])

    trial_k = AutoSpec(samples=1)
    assert context(1, trial_k) == context(4, trial_k) and context(4, trial_k)["samples"] == 1
    final_k = replace(trial_k, samples=None)
    assert context(1, final_k) != context(4, final_k) and context(4, final_k)["samples"] == 4
    assert "fallback" not in context(1, trial_k)["auto"]  # no candidate's score depends on it
