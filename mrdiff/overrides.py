"""The one parser of ``--set key=value`` overrides (training config, method parameters, benchmarks).

Values are YAML, so ``lr=0.5`` is a float, ``channels=[8,16]`` a list and ``init=unet`` a string. PyYAML
follows YAML 1.1, where ``1e-4`` (no dot) is a *string*; such exponent-only numbers are read as floats.
Malformed items are a one-line :class:`~mrdiff.errors.InputError`, never a traceback. What a key may
name is up to the caller (``mrdiff.config.apply_overrides`` checks config sections, :func:`method_params`
a method's parameters).
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import yaml

from mrdiff.errors import InputError

#: numbers like ``1e-3`` that YAML 1.1 (PyYAML) would leave as strings
EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def split_set(item: str) -> tuple[str, str]:
    """``"a.b=text"`` -> ``("a.b", "text")``; the value is left unparsed.

    Raises:
        InputError: no ``=``, or an empty key.
    """
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise InputError(f"--set expects key=value, got {item!r}")
    return key.strip(), raw


def yaml_value(raw: str, item: str | None = None) -> Any:
    """``raw`` parsed as YAML, with ``1e-3`` read as 0.001; ``item`` names the override in the error."""
    if EXPONENT_FLOAT.fullmatch(raw.strip()):
        return float(raw)
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        raise InputError(f"--set {item or raw!r}: value is not valid YAML") from None


def parse_set(item: str) -> tuple[str, Any]:
    """``"a.b=1e-3"`` -> ``("a.b", 0.001)`` (key stripped, value parsed as YAML)."""
    key, raw = split_set(item)
    return key, yaml_value(raw, item)


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``["a=1", "b.c=x"]`` -> ``{"a": 1, "b.c": "x"}``; a later item wins over an earlier one."""
    return dict(parse_set(item) for item in items or [])


def method_params(method: str, target: object, sets: dict) -> dict:
    """Keep ``--set`` keys for ``method`` (``key`` or ``method.key``); reject keys it does not take."""
    params = {k.split(".", 1)[1] if k.startswith(method + ".") else k: v for k, v in sets.items()}
    sig = inspect.signature(target)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return params
    known = set(sig.parameters) - {"self", "y", "op"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise InputError(f"unknown parameter(s) {unknown} for method '{method}' (known: {sorted(known)})")
    return params
