"""NpyRows: slices, index arrays and reads into a preallocated buffer give the file's rows."""

import numpy as np
import pytest

from sparse_cbm.storage.rows import NpyRows


@pytest.fixture
def saved(tmp_path):
    arr = np.random.default_rng(0).standard_normal((37, 5)).astype(np.float16)
    np.save(tmp_path / "a.npy", arr)
    return arr, NpyRows(tmp_path / "a.npy")


def test_slices_and_index_arrays(saved):
    arr, rows = saved
    assert len(rows) == 37 and rows.shape == (37, 5)
    np.testing.assert_array_equal(rows[3:20], arr[3:20])
    np.testing.assert_array_equal(rows[::4], arr[::4])
    np.testing.assert_array_equal(rows[np.array([5, 0, 36])], arr[[5, 0, 36]])


def test_read_into_a_buffer(saved):
    arr, rows = saved
    buf = np.full((8, 5), np.nan, dtype=np.float16)
    for lo in range(0, 37, 8):
        got = rows.read_into(lo, buf)
        assert np.shares_memory(got, buf)
        np.testing.assert_array_equal(got, arr[lo:lo + 8])
    assert rows.read_into(37, buf).shape == (0, 5)
    with pytest.raises(ValueError, match="float16 array of width 5"):
        rows.read_into(0, np.empty((8, 5), dtype=np.float32))
