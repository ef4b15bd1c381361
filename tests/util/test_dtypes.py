"""Which dtypes a pipeline codes directly, and a clear refusal of the others."""

from __future__ import annotations

import numpy as np
import pytest

from lmgc_core.codecs.numcodecs_codec import LMGC
from lmgc_core.coding.pipeline import Pipeline
from lmgc_core.util.dtypes import is_codable
from lmgc_core.util.errors import ConfigError

REFUSED = [np.longdouble, np.complex64, np.complex128, np.dtype("U3"), np.dtype("M8[s]")]


@pytest.mark.parametrize("dtype", REFUSED, ids=str)
@pytest.mark.parametrize("level", [1, 2])
def test_a_pipeline_refuses_what_no_prior_codes_with_a_config_error(dtype, level):
    """Long double (80 bits in 16 bytes on x86) had reached the float prior and failed there
    with numpy's TypeError ("data type 'u16' not understood")."""
    assert not is_codable(dtype)
    with pytest.raises(ConfigError, match="cannot compress arrays of dtype"):
        Pipeline.from_config({"level": level}).compress(np.zeros(4, dtype))


def test_the_codecs_code_long_double_as_its_bytes():
    x = np.array([1.5, -0.0, np.inf, np.nan, 1e-4000], np.longdouble)
    back = LMGC().decode(LMGC().encode(x))
    assert back.dtype == x.dtype and back.tobytes() == x.tobytes()


def test_a_dtype_whose_text_names_no_dtype_is_never_recorded() -> None:
    """ml_dtypes' complex32 spells itself '<W4', which no decoder reads: a numcodecs stream
    of it encoded, then never decoded."""
    import ml_dtypes
    import numcodecs

    from lmgc_core.util.dtypes import decode_dtype, encode_dtype

    if not hasattr(ml_dtypes, "complex32"):
        pytest.skip("this ml_dtypes has no complex32")
    with pytest.raises(TypeError, match="cannot be recorded"):
        encode_dtype(np.dtype(ml_dtypes.complex32))
    with pytest.raises(ConfigError, match="cannot be recorded"):
        numcodecs.get_codec({"id": "lmgc"}).encode(np.zeros(8, ml_dtypes.complex32))
    for dtype in ["<c8", ">f4", "|S5", "<U3", "M8[ns]", [("a", "<f4"), ("b", "S3")], "V3"]:
        assert decode_dtype(encode_dtype(np.dtype(dtype))) == np.dtype(dtype)
