"""The banks' small-array helpers give what the numpy functions they stand for give, bit for bit."""

import numpy as np
import pytest

from devices.arrays import as_row, clip

EDGES = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-300, -5.5, 3.0, 7.25, 1e300])


@pytest.mark.parametrize("lo, hi", [(-1.0, 1.0), (0.0, 0.0), (-0.0, 0.0), (2.0, -2.0), (np.nan, 1.0), (0.0, np.inf)])
def test_clip_equals_np_clip_bit_for_bit(lo, hi):
    for bounds in ((lo, hi), (np.full(EDGES.size, lo), np.full(EDGES.size, hi))):
        assert clip(EDGES, *bounds).tobytes() == np.clip(EDGES, *bounds).tobytes()


def test_as_row_passes_a_float_row_through_and_broadcasts_anything_else():
    row = np.array([1.0, 2.0, 3.0])
    assert as_row(row, 3) is row
    assert as_row(2.5, 3).tolist() == [2.5, 2.5, 2.5]
    assert as_row(np.array([1, 2, 3]), 3).dtype == np.float64  # ints are converted, as before
    with pytest.raises(ValueError):
        as_row(np.array([1.0, 2.0]), 3)  # a wrong length still fails
