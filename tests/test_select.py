"""select_or_zero is np.where(condition, values, 0), inf and NaN included."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from layers.select import select_or_zero

SPECIAL = st.sampled_from([0.0, -0.0, 1.5, -2.0, np.inf, -np.inf, np.nan])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data())
def test_select_or_zero_is_the_branching_selection(dtype, data):
    shape = data.draw(hnp.array_shapes(max_dims=3, max_side=6))
    values = data.draw(
        hnp.arrays(
            dtype, shape, elements=st.one_of(SPECIAL, st.floats(-1e3, 1e3, width=32))
        )
    )
    condition = data.draw(hnp.arrays(np.bool_, shape))
    got = select_or_zero(condition, values)
    expected = np.where(condition, values, dtype(0))
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, expected)
    # Zeros are +0.0, as np.where's 0 and PyTorch's are.
    assert not np.signbit(got[got == 0]).any()


def test_a_scalar_value_broadcasts_in_its_dtype():
    condition = np.array([[True, False], [False, True]])
    got = select_or_zero(condition, np.float32(2.0))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [[2.0, 0.0], [0.0, 2.0]])


def test_inf_where_the_condition_fails_gives_zero_not_nan():
    values = np.array([np.inf, -np.inf, np.nan, 1.0])
    condition = np.array([False, False, False, True])
    with np.errstate(invalid="raise"):
        np.testing.assert_array_equal(
            np.nan_to_num(select_or_zero(condition, values), nan=-7.0), [0, 0, 0, 1]
        )
