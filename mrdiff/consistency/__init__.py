"""Measurement-consistency methods for the reverse process, one module each, and their registry.

Every method runs on the one loop in ``mrdiff.sampling.reverse_loop``; see ``base.Consistency``.
"""

from mrdiff.consistency.base import Consistency
from mrdiff.consistency.ccdf import CCDF
from mrdiff.consistency.dds import DDS
from mrdiff.consistency.dps import DPS
from mrdiff.consistency.ilvr import ILVR
from mrdiff.consistency.mcg import MCG
from mrdiff.consistency.pocs import POCS
from mrdiff.consistency.repaint import RePaint

REGISTRY: dict[str, type[Consistency]] = {
    "pocs": POCS,
    "ilvr": ILVR,
    "ccdf": CCDF,
    "mcg": MCG,
    "repaint": RePaint,
    "dps": DPS,
    "dds": DDS,
}

__all__ = ["REGISTRY", "Consistency", "CCDF", "DDS", "DPS", "ILVR", "MCG", "POCS", "RePaint"]
