"""The method registries fail loudly: a broken import never makes methods vanish silently."""

from __future__ import annotations

import sys

import pytest

from mrdiff import pipeline


def test_registries_list_every_method():
    names = pipeline.all_methods()
    assert {"zf", "cs-l1", "unet", "varnet", "pocs", "ccdf", "dps", "dds"} <= set(names)


def test_broken_consistency_import_raises(monkeypatch):
    monkeypatch.setitem(sys.modules, "mrdiff.consistency", None)  # any import of it now fails
    with pytest.raises(ImportError, match="mrdiff.consistency"):
        pipeline.diffusion_methods()
    with pytest.raises(ImportError):
        pipeline.all_methods()  # not a list without the diffusion methods


def test_module_that_fails_inside_its_import_raises(tmp_path, monkeypatch):
    (tmp_path / "broken_methods.py").write_text("import no_such_dependency_xyz\nREGISTRY = {}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="no_such_dependency_xyz"):
        pipeline._registry("broken_methods", "REGISTRY")
