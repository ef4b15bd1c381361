"""Which dtypes a pipeline codes directly, and a clear refusal of the others."""

from __future__ import annotations

import numpy as np
import pytest

import lmgc_core
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


@pytest.mark.parametrize("name", ["int1", "uint1", "int4", "bfloat16"])
def test_every_ml_dtype_comes_back_as_itself(name: str) -> None:
    """int1/uint1 came back as |V1, and a delta against an int1 base refused its own base."""
    import ml_dtypes

    if not hasattr(ml_dtypes, name):
        pytest.skip(f"this ml_dtypes has no {name}")
    dtype = np.dtype(getattr(ml_dtypes, name))
    new = (
        np.arange(512, dtype=np.uint8).astype(np.uint8).view(dtype)
        if dtype.itemsize == 1
        else np.arange(512, dtype=np.float32).astype(dtype)
    )
    base = new.copy()
    base[::7] = new[0]
    pipe = Pipeline.from_config({})
    back = pipe.decompress(pipe.compress(new))
    assert back.dtype == dtype and back.tobytes() == new.tobytes()
    from lmgc_core import decompress

    back = decompress(pipe.compress(new, base=base), base=base)
    assert back.dtype == dtype and back.tobytes() == new.tobytes()


def test_a_codec_dtype_of_ml_dtypes_is_read_in_a_fresh_interpreter() -> None:
    """LMGC(dtype="bfloat16").get_config() gave 'unknown dtype' to numcodecs.get_codec in any
    process that had not imported ml_dtypes (a Zarr v2 reader)."""
    import subprocess
    import sys

    code = (
        "import numcodecs, sys; "
        "c = numcodecs.get_codec({'id': 'lmgc', 'dtype': 'bfloat16', 'level': 1}); "
        "print(c.dtype, 'ml_dtypes' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.stdout.split() == ["bfloat16", "True"], done.stderr
    with pytest.raises(ConfigError, match="lmgc codec: dtype 'complex32'"):
        LMGC(dtype="complex32")  # ml_dtypes has it, no stream can name it


def test_a_dtype_that_needs_ml_dtypes_says_so_not_corrupted(monkeypatch) -> None:
    """Without ml_dtypes a bf16 archive was 'corrupted lmgc archive: ... bad dtype'."""
    import sys

    from lmgc_core.util import dtypes

    dtypes._parse_dtype.cache_clear()
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    try:
        with pytest.raises(ConfigError, match="needs ml_dtypes") as info:
            dtypes.decode_dtype("bfloat16")
        assert not isinstance(info.value, dtypes.StreamError)
    finally:
        dtypes._parse_dtype.cache_clear()


def test_items_of_no_bytes_come_back_without_memory() -> None:
    """A chunk declaring uint8 [2**31, 0] with a '|S0' view came back as 2 GiB of |S1 (np.zeros
    allocates a byte per item of no bytes); |S0 arrays now come back as themselves."""
    import numcodecs

    from lmgc_core.util.dtypes import restore_view

    back = restore_view(np.zeros((1 << 31, 0), np.uint8), {"dtype": "|S0"})
    assert back.dtype == np.dtype("S0") and back.shape == (1 << 31,) and back.nbytes == 0
    codec = numcodecs.get_codec({"id": "lmgc", "level": 1})
    for arr in (
        np.ndarray((5,), "S0"),
        np.ndarray((0,), "S0"),
        np.zeros(3, []),
        np.ndarray((3, 4), "V0"),
    ):  # fmt: skip (|V0 reached the prior: a TypeError)
        got = codec.decode(codec.encode(arr))
        assert got.dtype == arr.dtype and got.shape == arr.shape
    with pytest.raises(ConfigError, match="directly"):  # needs the codecs' byte view
        lmgc_core.compress(np.ndarray((3,), "V0"))


def test_masked_values_and_unreadable_tensors_are_refused_in_words(tmp_path) -> None:
    """np.asarray dropped a masked array's mask ([1.5, --, 3.0] came back [1.5, -999.0, 3.0],
    silently) in compress, the codec and safetensors' save_file; a torch bf16 or grad tensor
    raised torch's own error."""
    import torch

    from lmgc_core.safetensors.numpy import save_file

    masked = np.ma.masked_array(np.float32([1.5, -999.0, 3.0]), mask=[False, True, False])
    with pytest.raises(ConfigError, match="mask would be lost"):
        lmgc_core.compress(masked)
    with pytest.raises(ConfigError, match="mask would be lost"):
        LMGC(level=1).encode(masked)
    with pytest.raises(TypeError, match="tensor 'w': a masked array"):
        save_file({"w": masked}, tmp_path / "m.safetensors")
    unmasked = np.ma.masked_array(np.float32([1.5, 2.0]))  # nothing masked: nothing to lose
    assert lmgc_core.decompress(lmgc_core.compress(unmasked)).tolist() == [1.5, 2.0]
    for tensor in (torch.ones(4, dtype=torch.bfloat16), torch.ones(4, requires_grad=True)):
        with pytest.raises(ConfigError, match=r"cannot read a Tensor as an array: .*torch tensor"):
            lmgc_core.compress(tensor)


def test_a_byte_swapped_ml_dtype_is_refused_or_comes_back_as_itself() -> None:
    """``bfloat16.newbyteorder()`` was recorded as plain bfloat16: coded alone its bytes came
    back as native bfloat16 (other values, no error), and against a base of the same dtype
    decoding refused that very base."""
    import ml_dtypes

    swapped = np.dtype(ml_dtypes.bfloat16).newbyteorder()
    x = np.array([0.125, -0.5, 3.0, np.nan], np.float32).astype(swapped)
    with pytest.raises(ConfigError, match="byte-swapped bfloat16"):
        lmgc_core.compress(x)
    with pytest.raises(ConfigError, match="byte-swapped bfloat16"):
        lmgc_core.compress(x, base=x.copy(), base_name="b")
    try:  # the codecs code other dtypes through an integer view: exact, or refused in words
        back = LMGC().decode(LMGC().encode(x))
    except ConfigError as exc:
        assert "byte-swapped" in str(exc)
    else:
        assert back.dtype == x.dtype and back.tobytes() == x.tobytes()
    native = x.astype(ml_dtypes.bfloat16)  # what the message says to do: the same values
    back = lmgc_core.decompress(lmgc_core.compress(native))
    assert back.tobytes() == native.tobytes()
    assert np.array_equal(back.astype(np.float32), x.astype(np.float32), equal_nan=True)
