"""Files shipped inside the installed packages (weights, presets, demo input), found by import name.

Everything the command needs at run time is package data and is located with
:mod:`importlib.resources`, never by walking up from ``__file__`` to the repository: the same lookup
works from a source checkout, an editable install and a wheel installed in ``site-packages``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from mrdiff.errors import InputError


def package_path(package: str, *parts: str) -> Path:
    """The file-system path of ``parts`` inside the installed ``package`` (it need not exist).

    Args:
        package: an importable package name, e.g. ``"mrdiff"`` or ``"data_prep"``.
        parts: path components below the package folder, e.g. ``("weights", "brain128-cpu.pt")``.

    Returns:
        An absolute :class:`~pathlib.Path`.

    Raises:
        InputError: the package is not installed as plain files (e.g. imported from a zip archive).
    """
    resource = files(package).joinpath(*parts)
    if not isinstance(resource, Path):
        raise InputError(f"{package} is not installed as plain files; cannot locate {'/'.join(parts)}")
    return resource
