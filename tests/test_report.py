"""Report plots: drawn without layout warnings, whatever the unit names."""
from __future__ import annotations

import warnings

import pytest

from qslm.report import plot_sensitivity


@pytest.mark.parametrize("bits", [(8,), (2, 3, 4, 5, 6, 8)])
def test_sensitivity_heatmap_fits_the_unit_names(tmp_path, bits):
    """A uniform plan's report has a single bit-width column: the figure must still hold the names."""
    units = ["emb"] + [f"blocks.{i}.{part}" for i in range(4) for part in ("att.receptance", "ffn.value")]
    report = {"sensitivity": {u: {str(b): {"kl": 10.0 ** -(b + i % 3)} for b in bits} for i, u in enumerate(units)}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_sensitivity(report, tmp_path / "sensitivity.png")
    assert (tmp_path / "sensitivity.png").stat().st_size > 1000
