"""Each defect a plugin author can make, injected on purpose, is caught by the conformance kit
(or, at compress / decode time, by the pipeline with an error that names the component)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from lmgc_core import (
    ChecksumError,
    ConfigError,
    Pipeline,
    PluginError,
    StreamError,
    compress,
    decompress,
)
from lmgc_core.components import registry
from lmgc_core.components.hookspecs import hookimpl
from lmgc_core.components.interfaces import ContextScores, Prior, Stage
from lmgc_core.testing import (
    ConformanceError,
    check_coder,
    check_prior,
    check_serializer,
    check_stage,
)
from tests.paths import ROOT_DIR

EXAMPLES = ROOT_DIR / "docs" / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"defects_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LaplacePrior = _load("laplace_prior").LaplacePrior
NegateStage = _load("negate_stage").NegateStage


class _Plugin:
    """An in-process plugin (``registry.add_plugin``) offering the given factories."""

    def __init__(self, kind: str, components: dict) -> None:
        self.kind, self.components = kind, components

    def _register(self, kind, register):
        if kind == self.kind:
            for name, factory in self.components.items():
                register(name, factory)

    @hookimpl
    def register_priors(self, register):
        self._register("prior", register)

    @hookimpl
    def register_stages(self, register):
        self._register("stage", register)

    @hookimpl
    def register_coders(self, register):
        self._register("coder", register)

    @hookimpl
    def register_serializers(self, register):
        self._register("serializer", register)


@pytest.fixture
def install():
    added = []

    def add(kind: str, **components):
        plugin = _Plugin(kind, {k.replace("_", "-"): v for k, v in components.items()})
        registry.add_plugin(plugin, label="defects-plugin 0.0")
        added.append(plugin)

    yield add
    for plugin in added:
        registry.remove_plugin(plugin)


FAST = {"fresh_process": False}  # in-process plugins cannot be re-imported by a fresh process


def _without(cls: type, *attrs: str, name: str = "Defective") -> type:
    """A copy of ``cls`` as a direct subclass of its interface, minus ``attrs``."""
    body = {k: v for k, v in vars(cls).items() if k not in (*attrs, "__dict__", "__weakref__")}
    return type(name, cls.__bases__, body)


# ------------------------------------------------------------------------------ control


def test_the_examples_pass_so_each_failure_below_is_the_defect(install):
    install("prior", laplace=LaplacePrior)
    install("stage", negate=NegateStage)
    check_prior({"name": "laplace", "scale": 2.0}, batch_independent=True, **FAST)
    check_stage("negate", **FAST)


# ------------------------------------------------------------------------------ names


def test_name_missing(install):
    class Nameless(LaplacePrior):
        name = ""

    install("prior", nameless=Nameless)
    with pytest.raises(ConformanceError, match=r"registered name: .*whose `name` is ''"):
        check_prior("nameless", **FAST)
    with pytest.raises(ConformanceError, match=r"`name` is not set on the class"):
        check_prior(Nameless(), **FAST)
    # Without the kit: compress refuses at once instead of writing an undecodable stream.
    with pytest.raises(PluginError, match=r"set `name = 'nameless'` on the class"):
        compress(np.float32([1, 2]), {"prior": "nameless"})


def test_name_different_from_the_registered_one(install):
    install("prior", laplace2=LaplacePrior)
    with pytest.raises(ConformanceError, match=r"prior 'laplace2'.*whose `name` is 'laplace'"):
        check_prior("laplace2", **FAST)


# ------------------------------------------------------------------------------ defaults


@pytest.mark.parametrize("attr", ["default_window", "default_batch_size"])
def test_default_layout_not_set_deliberately(install, attr):
    install("prior", laplace=_without(LaplacePrior, attr))
    with pytest.raises(ConformanceError, match=rf"defaults: .*does not set {attr}"):
        check_prior("laplace", **FAST)


# ------------------------------------------------------------------------------ options


def test_option_in_neither_get_config_nor_fingerprint(install):
    class Forgetful(LaplacePrior):
        def get_config(self):
            return {}

        def fingerprint(self):
            return {"prior": self.name, "version": 1}

    install("prior", laplace=Forgetful)
    with pytest.raises(ConformanceError, match=r"option\(s\) \['scale'\] are missing from get_"):
        check_prior({"name": "laplace"}, **FAST)
    # What it would do unchecked: the stream decodes with the default scale -> refused by name.
    # mostly zero digits, which it codes in far fewer than 4 bits (an expanding part is stored
    # raw, and a stored part decodes without the prior)
    blob = _pipeline(Forgetful(scale=3.0)).compress(np.float32([1, 2, 3] + [0] * 13))
    with pytest.raises((StreamError, ChecksumError), match=r"prior 'laplace' \(defects-plugin"):
        decompress(blob)


def test_option_in_get_config_but_not_in_fingerprint(install):
    class Unprinted(LaplacePrior):
        def fingerprint(self):
            return {"prior": self.name, "version": 1}

    install("prior", laplace=Unprinted)
    with pytest.raises(ConformanceError, match=r"option 'scale' is in get_config\(\) but not in"):
        check_prior("laplace", **FAST)


def test_option_in_fingerprint_but_not_in_get_config(install):
    class Unconfigured(LaplacePrior):
        def get_config(self):
            return {}

    install("prior", laplace=Unconfigured)
    with pytest.raises(ConformanceError, match=r"\['scale'\] are missing from get_config"):
        check_prior(Unconfigured(scale=2.0), **FAST)
    # The pipeline refuses to compress, naming the option, before writing anything.
    pipe = _pipeline(Unconfigured(scale=2.0))
    with pytest.raises(ConfigError, match=r"prior 'laplace'.*'scale': 2.0 here, 0.5 rebuilt"):
        pipe.compress(np.float32([1, 2, 3]))


def _pipeline(prior) -> Pipeline:
    base = Pipeline.from_config({"prior": "uniform"})
    return Pipeline(base.serializer, prior, base.coder)


# ------------------------------------------------------------------------------ versions


def test_code_change_without_version_bump_is_refused_by_name(install, monkeypatch):
    install("prior", laplace=LaplacePrior)
    data = np.arange(200, dtype=np.float32)  # ~2.9 bits a hex digit: coded, not stored raw
    blob = compress(data, {"prior": {"name": "laplace", "scale": 0.3}})
    # The "new release": other maths, same fingerprint.
    original = LaplacePrior.open

    def changed(self, alphabet, batch_size, window, pattern=(-1,)):
        session = original(self, alphabet, batch_size, window, pattern)
        session._scores = session._scores[:, ::-1].copy()
        return session

    monkeypatch.setattr(LaplacePrior, "open", changed)
    with pytest.raises(StreamError) as err:
        decompress(blob)
    text = str(err.value)
    assert "prior 'laplace' (defects-plugin 0.0)" in text
    assert "the stream was made with" in text and "this decoder uses" in text
    assert "not deterministic" in text  # same versions here: the pip test covers a new version


# ------------------------------------------------------------------------------ scores


def test_nondeterministic_scores(install):
    class Noisy(LaplacePrior):
        def open(self, alphabet, batch_size, window, pattern=(-1,)):
            session = super().open(alphabet, batch_size, window, pattern)
            session._scores = session._scores + np.random.default_rng().normal(size=len(alphabet))
            return session

    install("prior", laplace=Noisy)
    with pytest.raises(ConformanceError, match=r"determinism: the same calls in a second session"):
        check_prior("laplace", **FAST)


def test_batch_dependence_of_a_prior_that_claims_independence(install):
    class BatchBound(LaplacePrior):
        def open(self, alphabet, batch_size, window, pattern=(-1,)):
            session = super().open(alphabet, batch_size, window, pattern)
            session._scores = session._scores * batch_size
            return session

    install("prior", laplace=BatchBound)
    with pytest.raises(ConformanceError, match=r"batch independence: window \d+ is scored"):
        check_prior("laplace", batch_independent=True, **FAST)
    check_prior("laplace", **FAST)  # an honest claim passes: same calls, same scores


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda s: s[0], r"scores have shape \(\d+,\)"),
        (lambda s: np.full_like(s, np.nan), r"scores hold NaN"),
        (lambda s: s.astype(np.int64), r"scores must be floats"),
    ],
)
def test_malformed_scores(install, mangle, message):
    class Malformed(LaplacePrior):
        def open(self, alphabet, batch_size, window, pattern=(-1,)):
            session = super().open(alphabet, batch_size, window, pattern)
            session._scores = mangle(session._scores)
            return session

    install("prior", laplace=Malformed)
    with pytest.raises(ConformanceError, match=rf"scores: start\(prefix .*\): .*{message[2:]}"):
        check_prior("laplace", **FAST)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s, b: np.zeros((b + 1, s.shape[-1])),  # neither (B, A) nor (1, A)
        lambda s, b: s[..., :3],  # another alphabet's
        lambda s, b: None,
        lambda s, b: ContextScores(np.zeros((2, s.shape[-1])), np.full(b, 5)),  # rows past it
        lambda s, b: ContextScores(np.zeros((2, s.shape[-1])), np.zeros(b, dtype=float)),
    ],
)
def test_malformed_scores_met_by_the_pipeline_name_the_prior(install, mangle):
    """Without the kit, such scores failed deep in the engine or the coder (``IndexError``,
    "`symbols` argument has wrong length"), naming no prior or plugin."""

    class Malformed(LaplacePrior):
        def open(self, alphabet, batch_size, window, pattern=(-1,)):
            session = super().open(alphabet, batch_size, window, pattern)
            session._scores = mangle(np.atleast_2d(session._scores), batch_size)
            return session

    install("prior", laplace=Malformed)
    x = np.linspace(-1, 1, 64, dtype=np.float32)
    with pytest.raises(PluginError, match="prior 'laplace' gave scores that are not"):
        compress(x, {"prior": "laplace"})


# ------------------------------------------------------------------------------ stages


def test_stage_that_reads_bytes_in_the_callers_byte_order(install):
    class ByteBound(NegateStage):
        def forward(self, parts):
            out = {}
            for k, v in parts.items():  # no native(): '>f4' bits are read as if '<f4'
                if v.dtype.kind == "f":
                    bits = np.ascontiguousarray(v).view(f"u{v.dtype.itemsize}")
                    v = (bits ^ np.array(1, dtype=bits.dtype)).view(v.dtype)
                out[k] = v
            return out, {}

        def inverse(self, parts, state):
            return self.forward(parts)[0]

    install("stage", negate=ByteBound)
    with pytest.raises(ConformanceError, match=r"byte order: forward of .* gives other parts"):
        check_stage("negate", **FAST)


def test_stage_state_that_is_not_json(install):
    class NumpyState(NegateStage):
        def forward(self, parts):
            out, _ = super().forward(parts)
            return out, {"count": np.int64(3)}

    install("stage", negate=NumpyState)
    with pytest.raises(ConformanceError, match=r"state: of gradients is not JSON-serialisable"):
        check_stage("negate", **FAST)


def test_stage_that_crashes_on_nan_instead_of_refusing(install):
    class Fragile(NegateStage):
        def forward(self, parts):
            if any(np.isnan(v).any() for v in parts.values() if v.dtype.kind == "f"):
                raise ValueError("cannot convert float NaN to integer")
            return super().forward(parts)

    install("stage", negate=Fragile)
    with pytest.raises(ConformanceError, match=r"forward: .*raised ValueError.*LMGCError"):
        check_stage("negate", **FAST)


def test_stage_that_modifies_its_input(install):
    class Mutating(NegateStage):
        def forward(self, parts):
            out, state = super().forward(parts)
            for v in parts.values():
                if v.size and v.dtype.kind == "f" and v.flags.writeable:
                    v[0] = 7
            return out, state

    install("stage", negate=Mutating)
    with pytest.raises(ConformanceError, match=r"modified its input"):
        check_stage("negate", **FAST)


def test_stage_that_claims_lossless_but_is_not(install):
    class Rounding(NegateStage):
        def forward(self, parts):
            out = {k: np.round(v, 2) if v.dtype.kind == "f" else v for k, v in parts.items()}
            return out, {}

        def inverse(self, parts, state):
            return dict(parts)

    install("stage", negate=Rounding)
    with pytest.raises(ConformanceError, match=r"lossless: claims lossless = True"):
        check_stage("negate", **FAST)


# ------------------------------------------------------------------------------ coders, serializers


def test_coder_that_crashes_on_garbage(install):
    from lmgc_range_coder.coder import RangeCoder

    class Crashy(RangeCoder):
        name = "crashy"

        def decoder(self, data):
            if len(data) % 4:
                raise IndexError("list index out of range")
            return super().decoder(data)

    install("coder", crashy=Crashy)
    with pytest.raises(ConformanceError, match=r"garbage: 3 garbage bytes raise IndexError"):
        check_coder("crashy", **FAST)


def test_serializer_config_that_does_not_survive_json(install):
    from lmgc_serializers.hex import HexSerializer

    class Tupled(HexSerializer):
        name = "tupled"

        def get_config(self):
            return {**super().get_config(), "extra": ()}

    install("serializer", tupled=Tupled)
    with pytest.raises(ConformanceError, match=r"does not survive JSON"):
        check_serializer("tupled", **FAST)


def test_the_interfaces_are_required(install):
    class NotAPrior:
        name = "fake"

        def get_config(self):
            return {}

    install("prior", fake=NotAPrior)
    with pytest.raises(ConformanceError, match=r"is not a lmgc_core Prior"):
        check_prior("fake", **FAST)
    assert issubclass(LaplacePrior, Prior) and issubclass(NegateStage, Stage)


def test_stage_whose_inverse_crashes(install):
    """The kit let the stage's own RuntimeError escape instead of naming the rule."""

    class Crashing(NegateStage):
        def inverse(self, parts, state):
            raise RuntimeError("boom")

    install("stage", negate=Crashing)
    with pytest.raises(ConformanceError, match=r"inverse: of .* raised RuntimeError: boom"):
        check_stage("negate", **FAST)


@pytest.mark.parametrize("lossless", [True, False])
def test_stage_whose_inverse_returns_fewer_values(install, lossless):
    """numpy's ValueError ("cannot reshape array of size 149") escaped the kit and, through
    the stages' replay probe, every compress."""

    class Shrinking(NegateStage):
        def inverse(self, parts, state):
            return {k: v[:-1] for k, v in super().inverse(parts, state).items()}

    Shrinking.lossless = lossless
    install("stage", negate=Shrinking)
    said = r"rebuilds 149 values" if lossless else r"do not rebuild an array of float32"
    with pytest.raises(ConformanceError, match=said):
        check_stage("negate", **FAST)


def test_a_run_time_plugin_in_a_fresh_process_says_how_to_check_it(install):
    """With the default fresh_process=True, a plugin added at run time (a notebook's) failed
    with the fresh process's ModuleNotFoundError and no word of what to do."""
    install("stage", negate=NegateStage)
    with pytest.raises(ConformanceError, match=r"fresh process: .*fresh_process=False"):
        check_stage("negate", cli=False, codec=False)
