"""The lossy pre-stages ``quantize`` and ``sparsify``: their maths, their state, and the guarantee
that lmgc returns exactly the stage's own reconstruction, bit for bit."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from lmgc_stages.quantize import QuantizeStage
from lmgc_stages.sparsify import SparsifyStage, random_indices

import lmgc_core
from lmgc_core.coding.pipeline import Pipeline
from lmgc_core.components import registry
from lmgc_core.stream import container
from lmgc_core.util.errors import ConfigError, LMGCError, StreamError
from tests.paths import TESTS_DIR

DATA = TESTS_DIR / "data"


@pytest.fixture(scope="module")
def real() -> np.ndarray:
    """7 snapshots x 4,096 real float32 gradients (slices of every layer of an MLP on digits)."""
    return np.load(DATA / "mlp_digits_grads_slice.npy")


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def roundtrip(stage, x: np.ndarray) -> tuple[dict, dict, np.ndarray]:
    """forward, JSON-round-tripped state (as the stream header stores it), inverse."""
    parts, state = stage.forward({"data": x})
    state = json.loads(json.dumps(state))
    return parts, state, stage.inverse(parts, state)["data"]


finite_float = st.sampled_from([np.float16, np.float32, np.float64]).flatmap(
    lambda dt: hnp.arrays(
        dt,
        st.integers(0, 300),
        elements=st.floats(allow_nan=False, allow_infinity=False, width=np.dtype(dt).itemsize * 8),
    )
)


# -- registration and options ---------------------------------------------------------------


def test_stages_are_registered_through_the_entry_point():
    assert {"quantize", "sparsify"} <= set(registry.names("stage"))
    q = registry.build("stage", "quantize", {"bits": 4})
    assert isinstance(q, QuantizeStage) and q.get_config() == {"bits": 4}
    s = registry.build("stage", "sparsify", {"keep": 0.25, "method": "random", "seed": 3})
    assert s.get_config() == {
        "keep": 0.25,
        "method": "random",
        "seed": 3,
        "index_format": "bitmask",
    }


@pytest.mark.parametrize(
    "name, options",
    [
        ("quantize", {"bits": 0}),
        ("quantize", {"bits": 17}),
        ("quantize", {"bits": 8.0}),
        ("quantize", {"levels": 8}),
        ("sparsify", {"keep": 0}),
        ("sparsify", {"keep": 1.5}),
        ("sparsify", {"method": "bottomk"}),
        ("sparsify", {"seed": -1}),
        ("sparsify", {"index_format": "csr"}),
    ],
)
def test_bad_options_are_config_errors(name, options):
    with pytest.raises(ConfigError):
        registry.build("stage", name, options)


# -- quantize -------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=finite_float, bits=st.integers(2, 16))
# the grid's last point rounded past the largest float64 (it reconstructed as inf)
@example(x=np.array([np.finfo(np.float64).max, -1.86008301e303]), bits=2)
def test_quantize_linear_properties(x, bits):
    stage = QuantizeStage(bits)
    parts, _, rec = roundtrip(stage, x)
    q = parts["data"]
    assert q.dtype == (np.uint8 if bits <= 8 else np.uint16) and q.size == x.size
    assert rec.dtype == x.dtype and rec.shape == x.shape
    # the JSON round trip of the state changes nothing
    assert bits_equal(rec, stage.inverse(parts, stage.forward({"data": x})[1])["data"])
    if x.size == 0:
        return
    assert int(q.max()) <= (1 << bits) - 1
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:  # constant parts come back exactly
        assert bits_equal(rec, x) or np.all(rec == x)
        return
    x64, r64 = x.astype(np.float64), rec.astype(np.float64)
    step = (hi * 0.5 - lo * 0.5) / ((1 << bits) - 1) * 2
    with np.errstate(over="ignore"):
        ulp = np.spacing(np.abs(rec).astype(x.dtype)).astype(np.float64)
    assert np.all(np.abs(r64 - x64) <= 0.5 * step * (1 + 1e-9) + ulp)
    # extremes are hit: min -> 0, max -> 2**bits - 1
    assert q[np.argmin(x)] == 0 and int(q[np.argmax(x)]) == (1 << bits) - 1


@settings(max_examples=80, deadline=None)
@given(x=finite_float)
def test_quantize_sign_properties(x):
    stage = QuantizeStage(1)
    parts, _, rec = roundtrip(stage, x)
    assert parts["data"].dtype == np.uint8 and parts["data"].size == -(-x.size // 8)
    assert rec.dtype == x.dtype and rec.size == x.size
    if x.size == 0:
        return
    x64 = np.abs(x.astype(np.float64))
    with np.errstate(over="ignore"):
        scale = x64.mean()
    scale = scale if np.isfinite(scale) else (x64 / x.size).sum()
    scale = scale.astype(x.dtype)
    assert np.all(rec[x >= 0] == scale) and np.all(rec[x < 0] == -scale)


def test_quantize_state_keeps_exact_float_bits(real):
    x = real[0]
    _, state = QuantizeStage(8).forward({"data": x})
    st_ = state["parts"]["data"]
    assert st_["min"] == f"0x{int(x.min().view(np.uint32)):08x}"
    assert st_["max"] == f"0x{int(x.max().view(np.uint32)):08x}"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_quantize_rejects_non_finite(bad):
    x = np.float32([1, 2, bad, 4])
    with pytest.raises(LMGCError, match="non-finite"):
        QuantizeStage(8).forward({"data": x})


def test_quantize_leaves_integer_parts_alone():
    parts = {"data.mask": np.uint8([1, 2, 3]), "data.values": np.float32([0.5, -1, 2])}
    out, state = QuantizeStage(8).forward(parts)
    assert bits_equal(out["data.mask"], parts["data.mask"])
    assert list(state["parts"]) == ["data.values"]


def test_quantize_bfloat16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.linspace(-3, 5, 1000).astype(ml_dtypes.bfloat16)
    rec = roundtrip(QuantizeStage(8), x)[2]
    assert rec.dtype == x.dtype
    assert np.max(np.abs(rec.astype(np.float64) - x.astype(np.float64))) <= 8 / 255 / 2 + 0.04


def test_quantize_rejects_tampered_state():
    parts, state = QuantizeStage(4).forward({"data": np.float32([0, 1, 2])})
    state["parts"]["data"]["mode"] = "cubic"
    with pytest.raises(StreamError):
        QuantizeStage(4).inverse(parts, state)


# -- sparsify -------------------------------------------------------------------------------


any_float = st.sampled_from([np.float16, np.float32, np.float64]).flatmap(
    lambda dt: hnp.arrays(
        dt, st.integers(0, 300), elements=st.floats(width=np.dtype(dt).itemsize * 8)
    )
)


@settings(max_examples=150, deadline=None)
@given(
    x=any_float,
    keep=st.sampled_from([0.5, 0.25, 0.1, 0.01, 1.0, 0.333]),
    method=st.sampled_from(["topk", "random"]),
    index_format=st.sampled_from(["bitmask", "delta"]),
    seed=st.integers(0, 2**63),
)
def test_sparsify_properties(x, keep, method, index_format, seed):
    stage = SparsifyStage(keep, method=method, seed=seed, index_format=index_format)
    parts, _, rec = roundtrip(stage, x)
    n, k = x.size, stage.count(x.size)
    assert k == min(n, int(np.ceil(round(keep * n, 9))))
    assert rec.dtype == x.dtype and rec.shape == x.shape
    kept = np.zeros(n, dtype=bool)
    if method == "topk":
        if index_format == "bitmask":
            kept = np.unpackbits(parts["data.mask"], count=n).astype(bool)
        else:
            kept[np.cumsum(parts["data.delta"].astype(np.int64) + 1) - 1] = True
    else:
        assert set(parts) == {"data.values"}  # random-k sends no positions, only the seed
        kept[random_indices(n, k, seed)] = True
    assert kept.sum() == k == parts["data.values"].size
    # kept values are exact (NaN payloads included), the rest is +0.0
    assert bits_equal(rec[kept], x[kept])
    assert bits_equal(rec[~kept], np.zeros((~kept).sum(), dtype=x.dtype))
    if method == "topk" and 0 < k < n:
        mag = np.abs(x.astype(np.float64))
        mag[np.isnan(mag)] = -1
        assert mag[kept].min() >= mag[~kept].max()


def test_random_positions_are_pinned():
    """The positions random-k keeps are part of the stream format: they must never change."""
    assert random_indices(20, 5, 0).tolist() == [0, 3, 5, 13, 16]
    assert random_indices(20, 5, 1).tolist() == [6, 11, 14, 15, 17]
    idx = random_indices(100_000, 10_000, 12345)
    assert idx.size == 10_000 and np.all(np.diff(idx) > 0)
    # roughly uniform: every tenth of the range gets about a tenth of the picks
    counts = np.bincount(idx // 10_000, minlength=10)
    assert counts.min() > 850 and counts.max() < 1150


def test_sparsify_positions_do_not_depend_on_values():
    a = np.arange(1, 51, dtype=np.float32)
    b = -3 * np.arange(1, 51, dtype=np.float32)[::-1]
    stage = SparsifyStage(0.2, method="random", seed=9)
    ra, rb = roundtrip(stage, a)[2], roundtrip(stage, b)[2]
    assert np.count_nonzero(ra) == 10 and np.array_equal(ra != 0, rb != 0)


def test_sparsify_then_quantize_and_back(real):
    x = real[3]
    stages = [SparsifyStage(0.1), QuantizeStage(8)]
    parts, states = {"data": x}, []
    for s in stages:
        parts, state = s.forward(parts)
        states.append(json.loads(json.dumps(state)))
    assert parts["data.mask"].dtype == np.uint8 and parts["data.values"].dtype == np.uint8
    for s, state in zip(reversed(stages), reversed(states), strict=True):
        parts = s.inverse(parts, state)
    rec = parts["data"]
    # the reconstruction, worked out here from the stages' documented maths: the 10% largest
    # |x| (ties: lower index) quantized to 8 bits over their own range, the rest +0.0
    k = int(np.ceil(0.1 * x.size))
    kept = np.sort(np.argsort(-np.abs(x.astype(np.float64)), kind="stable")[:k])
    v = x[kept].astype(np.float64)
    lo, hi = float(x[kept].min()), float(x[kept].max())
    q = np.clip(np.rint((v - lo) / (hi - lo) * 255), 0, 255)
    want = np.zeros_like(x)
    want[kept] = (lo + q / 255 * (hi - lo)).astype(np.float32)
    assert bits_equal(rec, want)
    assert np.abs(rec[kept] - x[kept]).max() <= (hi - lo) / 255 / 2 * 1.0001  # half a step


def test_sparsify_rejects_inconsistent_parts():
    stage = SparsifyStage(0.5)
    parts, state = stage.forward({"data": np.float32([3, -1, 0, 7])})
    parts["data.values"] = parts["data.values"][:1]
    with pytest.raises(StreamError):
        stage.inverse(parts, state)


# -- through the whole pipeline: decode(encode(x)) == inverse(forward(x)), bit for bit -------

CONFIGS = [
    [{"name": "quantize", "bits": 16}],
    [{"name": "quantize", "bits": 8}],
    [{"name": "quantize", "bits": 4}],
    [{"name": "quantize", "bits": 1}],
    [{"name": "sparsify", "keep": 0.5}],
    [{"name": "sparsify", "keep": 0.25, "index_format": "delta"}],
    [{"name": "sparsify", "keep": 0.1, "method": "random", "seed": 42}],
    [{"name": "sparsify", "keep": 0.1}, {"name": "quantize", "bits": 8}],
]


@pytest.mark.parametrize("stages", CONFIGS, ids=lambda s: "+".join(json.dumps(x) for x in s))
def test_pipeline_returns_the_stage_reconstruction(real, stages):
    x = real[1:3]  # 2 x 4096 real gradients, 2-D on purpose
    pipe = Pipeline.from_config({"stages": stages, "prior": {"name": "adaptive"}, "window": 512})
    blob = pipe.compress(x)
    expected = pipe.reconstruct(x)
    assert bits_equal(pipe.decompress(blob), expected)
    assert bits_equal(lmgc_core.decompress(blob), expected)  # from the header alone
    assert len(blob) < x.nbytes
    header = lmgc_core.read_header(blob)
    assert [s["name"] for s in header["pipeline"]["stages"]] == [s["name"] for s in stages]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=hnp.arrays(
        np.float32,
        st.integers(1, 64),
        elements=st.floats(-1e3, 1e3, width=32),
    ),
    stage=st.sampled_from(CONFIGS),
)
def test_pipeline_reconstruction_property(x, stage):
    pipe = Pipeline.from_config({"stages": stage, "window": 64})
    assert bits_equal(pipe.decompress(pipe.compress(x)), pipe.reconstruct(x))


def _core_codes_empty_arrays() -> bool:
    try:
        Pipeline.from_config({}).compress(np.zeros(0, np.float32))
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("size", [0, 37])
def test_empty_and_constant_arrays_through_the_pipeline(size):
    if size == 0 and not _core_codes_empty_arrays():
        pytest.xfail("the core pipeline cannot code an empty part yet (hex serializer)")
    x = np.full(size, -2.5, np.float32)
    for stages in CONFIGS:
        pipe = Pipeline.from_config({"stages": stages, "window": 64})
        assert bits_equal(pipe.decompress(pipe.compress(x)), pipe.reconstruct(x))


# -- hostile stage states: a header edited and resealed (its CRC32 recomputed) ----------------


def _resealed(blob: bytes, edit: Any) -> bytes:
    header, offset = container.read_header(blob)
    edit(header["stages"][0])
    return container.pack(header, []) + blob[offset:]


def _set(path: tuple[str, ...], value: Any) -> Any:
    def edit(state: dict[str, Any]) -> None:
        for key in path[:-1]:
            state = state[key]
        state[path[-1]] = value

    return edit


LIMIT = "more than the 2,048 bytes"
N = ("parts", "data", "n")
HOSTILE_STATES = [
    # random-k regenerates its positions from its seed in O(n): n is bounded before that
    ({"name": "sparsify", "keep": 0.2, "method": "random"}, N, 2**28, LIMIT),
    ({"name": "sparsify", "keep": 0.2, "index_format": "delta"}, N, 2**28, LIMIT),
    ({"name": "sparsify", "keep": 0.2}, N, -1, "bad value count"),
    ({"name": "sparsify", "keep": 0.2}, N, "512", "bad value count"),
    ({"name": "sparsify", "keep": 0.2}, ("parts", "data", "k"), 10**9, "bad count"),
    ({"name": "sparsify", "keep": 0.2}, ("parts", "data"), 1, "bad state"),
    ({"name": "sparsify", "keep": 0.2}, ("parts", "data"), [1, 2], "bad state"),
    ({"name": "quantize", "bits": 8}, ("parts", "data", "bits"), 2**31, "bad bits"),
    ({"name": "quantize", "bits": 8}, ("parts", "data", "bits"), 0, "bad bits"),
    ({"name": "quantize", "bits": 8}, ("parts", "data", "dtype"), "bfloat16", "does not fit"),
    ({"name": "quantize", "bits": 1}, ("parts", "data", "count"), 2**28, LIMIT),
    # a state's dtype is a float's: a void of 2 GB an item made the inverse build a 2 GB integer
    # bound (quantize) or a 2 GB-an-item array (sparsify) before the checksum failed
    ({"name": "quantize", "bits": 8}, ("parts", "data", "dtype"), "|V2000000000", "not a float"),
    ({"name": "quantize", "bits": 1}, ("parts", "data", "dtype"), "<i8", "not a float"),
    ({"name": "sparsify", "keep": 0.2}, ("parts", "data", "dtype"), "|V100000000", "not a float"),
    ({"name": "sparsify", "keep": 0.2}, ("parts", "data", "dtype"), "|b1", "not a float"),
]


@pytest.mark.parametrize(("stage", "path", "value", "message"), HOSTILE_STATES)
def test_hostile_stage_states_are_refused_before_any_big_allocation(stage, path, value, message):
    x = np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32)  # 2,048 bytes
    blob = Pipeline.from_config({"stages": [stage]}).compress(x)
    with pytest.raises(StreamError, match=message):
        lmgc_core.decompress(_resealed(blob, _set(path, value)))


def test_the_rebuild_limit_is_the_arrays_bytes():
    """A state asking for one value more than the array has bytes is refused; within the limit
    the usual checks decide (here: the positions do not match)."""
    x = np.arange(8, dtype=np.float32)
    blob = Pipeline.from_config({"stages": [{"name": "sparsify", "keep": 0.5}]}).compress(x)
    with pytest.raises(StreamError, match="more than the 32 bytes"):
        lmgc_core.decompress(_resealed(blob, _set(("parts", "data", "n"), 33)))
    assert np.array_equal(
        lmgc_core.decompress(blob),
        Pipeline.from_config({"stages": [{"name": "sparsify", "keep": 0.5}]}).reconstruct(x),
    )


def test_stage_refusals_name_the_tensor_and_print_no_numpy_warning(tmp_path):
    """A signalling NaN printed numpy's RuntimeWarning (file and line) on every stage run, exit
    0 included, and quantize's refusal in a file of several tensors named part 'data'."""
    from safetensors.numpy import save_file

    from tests.cli_helpers import lmgc, one_error_line

    b = np.ones(100, np.float32)
    b.view(np.uint32)[0] = 0x7F800001  # a signalling NaN
    save_file({"w": np.zeros(10, np.float32), "b": b}, tmp_path / "m.safetensors")
    np.save(tmp_path / "s.npy", b)
    done = lmgc("compress", "-q", "--stage", "sparsify:keep=0.5", tmp_path / "s.npy")
    assert "RuntimeWarning" not in done.stderr
    failed = lmgc("compress", "-q", "--stage", "quantize:bits=8", tmp_path / "m.safetensors",
                  ok=False)  # fmt: skip
    assert "tensor 'b': quantize:" in one_error_line(failed, 1)


def test_sparsify_keeps_at_least_one_entry_for_any_positive_keep():
    """k = ceil(keep * n) as documented: keep=1e-10 on 5 values kept none (all +0.0)."""
    assert SparsifyStage(1e-10).count(5) == 1
    assert SparsifyStage(0.1).count(30) == 3  # float error in 0.1 * 30 still absorbed
