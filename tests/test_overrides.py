"""One `--set key=value` parser (mrdiff.overrides) behind recon, train's config and the benchmarks."""

from __future__ import annotations

import pytest

from benchmarks import recon_speed
from mrdiff.config import apply_overrides
from mrdiff.errors import InputError
from mrdiff.overrides import parse_set, parse_sets
from recon.verbs import common


def test_values_are_yaml_and_later_items_win():
    assert parse_set(" lamda =1e-3") == ("lamda", 0.001)  # YAML 1.1 alone would give the string "1e-3"
    assert parse_set("x=2E5") == ("x", 2e5) and parse_set("n=1e3x") == ("n", "1e3x")
    assert parse_sets(["a=1", "b.c=[8, 16]", "d=unet", "a=2", "e="]) == {
        "a": 2,
        "b.c": [8, 16],
        "d": "unet",
        "e": None,
    }
    assert common.parse_sets is parse_sets  # recon and bench use the same function


@pytest.mark.parametrize("item", ["novalue", "=3", "lamda=[1, 2", "k=: :"])
def test_bad_items_are_one_line_input_errors(item):
    with pytest.raises(InputError) as err:
        parse_sets([item])
    assert "\n" not in str(err.value)
    with pytest.raises(InputError):
        apply_overrides({"train": {}}, [item.replace("lamda", "train.lr").replace("k=", "train.lr=")])


def test_recon_speed_bad_set_is_one_line_exit_2(capsys, tmp_path):
    out = tmp_path / "speed.json"
    for bad in (["--set", "zeta=1"], ["--set", "dps.zeta"], ["--grid", "dps.zeta=[1,"]):
        assert recon_speed.main([*bad, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("recon_speed: error:") and err.count("\n") == 1
    assert not out.exists()


def test_recon_speed_parses_typed_params_and_grids():
    assert recon_speed._parse_params(["dps.zeta=0.5", "ccdf.init=unet"]) == {
        "dps": {"zeta": 0.5},
        "ccdf": {"init": "unet"},
    }
    assert recon_speed._grid(["dds.eta=0.5,0.85", "dds.cg_iters=2,3"]) == {
        "dds": [
            {"eta": 0.5, "cg_iters": 2},
            {"eta": 0.5, "cg_iters": 3},
            {"eta": 0.85, "cg_iters": 2},
            {"eta": 0.85, "cg_iters": 3},
        ]
    }
