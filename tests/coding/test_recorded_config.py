"""recorded_config: the pipeline a stream header records, with the decoder's overrides, read once
(for the one-shot decompress, the archive's StreamDecoder and the numcodecs codec)."""

from __future__ import annotations

import numpy as np
import pytest

from lmgc_core.codecs.numcodecs_codec import decompress_blob
from lmgc_core.coding.pipeline import Pipeline
from lmgc_core.coding.recorded import header_errors, recorded_config
from lmgc_core.files.filecodec import StreamDecoder
from lmgc_core.stream import container
from lmgc_core.util.errors import ConfigError, StreamError


def test_prior_options_merge_into_a_prior_recorded_by_name() -> None:
    header = {"pipeline": {"prior": "llamacpp", "window": 8}}
    config = recorded_config(header, {"model": "/here/m.gguf"})
    assert config == {"prior": {"name": "llamacpp", "model": "/here/m.gguf"}, "window": 8}
    assert header == {"pipeline": {"prior": "llamacpp", "window": 8}}  # the header is not touched
    mapping = recorded_config({"pipeline": {"prior": {"name": "x", "model": "a"}}}, {"model": "b"})
    assert mapping["prior"] == {"name": "x", "model": "b"}


def test_a_header_without_a_pipeline_is_a_stream_error_unless_a_default_is_given() -> None:
    with pytest.raises(StreamError, match="no pipeline configuration"):
        recorded_config({"pipeline": "float"})
    assert recorded_config({}, default={"prior": "uniform"}) == {"prior": "uniform"}


def test_a_malformed_prior_is_left_for_from_config_to_explain() -> None:
    config = recorded_config({"pipeline": {"prior": [1]}}, {"model": "m"})
    with pytest.raises(StreamError, match="invalid pipeline"), header_errors():
        Pipeline.from_config(config)


def test_every_decoder_builds_the_pipeline_its_header_records() -> None:
    data = np.linspace(-1, 1, 64, dtype=np.float32)
    blob = Pipeline.from_config({"prior": "adaptive", "serializer": "hex"}).compress(data)
    header = container.read_header(blob)[0]
    built = StreamDecoder().pipeline(header)
    assert built.recorded_config() == header["pipeline"]
    assert np.array_equal(decompress_blob({"prior": "uniform"}, blob), data)


def test_a_header_config_that_does_not_build_is_a_stream_error() -> None:
    with pytest.raises(StreamError, match="invalid pipeline"):
        StreamDecoder().pipeline({"pipeline": {"prior": {"name": "adaptive", "bogus": 1}}})
    # --model is for priors that have a model option; others decode as recorded
    StreamDecoder(model="/nowhere").pipeline({"pipeline": {"prior": "adaptive"}})
    pytest.importorskip("llama_cpp")
    with pytest.raises(ConfigError, match="cannot decode with --model"):
        StreamDecoder(model="/nowhere").pipeline({"pipeline": {"prior": "llamacpp"}})


def test_one_shot_decode_reuses_the_pipeline_a_header_records(monkeypatch) -> None:
    """lmgc_core.decompress builds a recorded pipeline once (a thread-safe prior without
    stages), again after a registry reset, and every time for a pipeline with stages."""
    import lmgc_core
    from lmgc_core.components import registry

    built: list[object] = []
    real = Pipeline._build.__func__  # type: ignore[attr-defined]

    def counting(cls, cfg):  # type: ignore[no-untyped-def]
        built.append(cfg)
        return real(cls, cfg)

    monkeypatch.setattr(Pipeline, "_build", classmethod(counting))
    data = np.linspace(-1, 1, 300, dtype=np.float32)
    blob = Pipeline.from_config({"prior": {"name": "float", "layout": [[3, 100]]}}).compress(data)
    built.clear()
    for _ in range(3):
        assert lmgc_core.decompress(blob).tobytes() == data.tobytes()
    assert len(built) <= 1  # the first may have been built by an earlier test
    registry.reset()
    built.clear()
    lmgc_core.decompress(blob)
    lmgc_core.decompress(blob)
    assert len(built) == 1
    staged = Pipeline.from_config({"stages": [{"name": "quantize", "bits": 8}]}).compress(data)
    built.clear()
    lmgc_core.decompress(staged)
    lmgc_core.decompress(staged)
    assert len(built) == 2


def test_a_remembered_stream_check_still_refuses_another_prior() -> None:
    """check_stream's answers are remembered per recorded pipeline and prior: a stream whose
    prior fingerprint differs is still refused after a matching one was decoded."""
    import lmgc_core
    from lmgc_core.util.errors import MismatchError

    data = np.linspace(-1, 1, 300, dtype=np.float32)
    blob = Pipeline.from_config({"prior": "float"}).compress(data)
    assert lmgc_core.decompress(blob).tobytes() == data.tobytes()
    header, _ = container.read_header(blob)
    header["prior"]["version"] = 99
    other = container.pack(header, list(container.unpack(blob).blocks))
    with pytest.raises(MismatchError):
        lmgc_core.decompress(other)
    assert lmgc_core.decompress(blob).tobytes() == data.tobytes()


@pytest.mark.parametrize(
    ("options", "says"),
    [({"modle": 1}, "has no option 'modle'"), ({"level": "x"}, "level must be one of")],
)
def test_bad_prior_options_are_the_callers_error_not_the_streams(options, says) -> None:
    """A misspelt key was reported as 'stream header has an invalid pipeline'."""
    from lmgc_core import decompress

    blob = Pipeline.from_config({"prior": "float"}).compress(np.ones(64, np.float32))
    with pytest.raises(ConfigError, match=f"prior_options .*{says}") as info:
        decompress(blob, prior_options=options)
    assert not isinstance(info.value, StreamError)
    assert decompress(blob, prior_options={"level": 1}).sum() == 64  # a good one still works


def test_a_stream_whose_own_prior_does_not_build_stays_the_streams_error() -> None:
    """The caller's prior_options were blamed whenever the build error named one of their keys,
    and an unknown recorded option's message lists every valid one: a good ``level`` override
    turned a bad stream into the caller's ConfigError."""
    from lmgc_core import decompress

    blob = Pipeline.from_config({"prior": "float"}).compress(np.ones(64, np.float32))
    header, _ = container.read_header(blob)
    header["pipeline"]["prior"] = {**header["pipeline"]["prior"], "bogus": 1}
    bad = container.pack(header, list(container.unpack(blob).blocks))
    with pytest.raises(StreamError, match="no option 'bogus'"):
        decompress(bad, prior_options={"level": 1})


def test_a_mistyped_model_path_in_prior_options_is_the_callers_error() -> None:
    """The documented use of prior_options is another machine's model path; the stream's own
    path does not build here either, and a typo in the caller's was called a bad stream."""
    from lmgc_core import decompress

    blob = Pipeline.from_config({"prior": "float"}).compress(np.arange(8, dtype=np.float32))
    header, start = container.read_header(blob)
    header["pipeline"]["prior"] = {"name": "llamacpp", "model": "/other/machine/model.gguf"}
    header["prior"] = {"backend": "llamacpp"}
    bad = container.pack(header, [blob[start:]])
    with pytest.raises(ConfigError, match=r"prior_options .*'/home/me/modle\.gguf' does not exist"):
        decompress(bad, prior_options={"model": "/home/me/modle.gguf"})


def test_a_stream_whose_model_is_not_here_says_which_and_how_to_give_it() -> None:
    """The header is fine and the model was moved (or is on another machine): it was called
    "an invalid pipeline" with a hint to install the bundled model, which is not the one."""
    from lmgc_core import MismatchError, decompress

    blob = Pipeline.from_config({"prior": "float"}).compress(np.arange(8, dtype=np.float32))
    header, start = container.read_header(blob)
    header["pipeline"]["prior"] = {"name": "llamacpp", "model": "/other/machine/model.gguf"}
    header["prior"] = {"backend": "llamacpp", "model_sha256": "ab" * 32}
    bad = container.pack(header, [blob[start:]])
    with pytest.raises(MismatchError) as caught:
        decompress(bad)
    said = str(caught.value)
    assert "made with the model '/other/machine/model.gguf' (SHA-256 abab" in said
    assert "--model PATH" in said and "invalid pipeline" not in said


@pytest.mark.parametrize(
    ("made_by", "said"),
    [
        ({"prior": "acme-priors 1.2", "serializer": "lmgc 0.1.0", "coder": "lmgc 0.1.0",
          "stages": {"0": "x"}}, "made with prior 'nosuch' from acme-priors 1.2: install it"),
        ({"prior": "lmgc 0.9.0", "stages": ["acme-stages 1.0"]}, "from lmgc 0.9.0: install"),
        ({"prior": 7, "stages": 3}, None),  # odd values: the plain error, no crash
        ("lmgc 0.9.0", "made with prior 'nosuch' from lmgc 0.9.0"),
    ],
)  # fmt: skip
def test_an_unknown_component_names_its_own_maker(made_by, said) -> None:
    """The maker of the missing component, not of another one; a made_by of odd shape raised
    a raw KeyError/TypeError."""
    from lmgc_core import decompress
    from lmgc_core.util.errors import UnknownComponentError

    blob = Pipeline.from_config({"prior": "float"}).compress(np.arange(8, dtype=np.float32))
    header, start = container.read_header(blob)
    header["pipeline"]["prior"] = {"name": "nosuch"}
    header["made_by"] = made_by
    bad = container.pack(header, [blob[start:]])
    with pytest.raises(UnknownComponentError) as info:
        decompress(bad)
    if said is None:
        assert "made with" not in str(info.value)
    else:
        assert said in str(info.value)


def test_the_callers_wrong_arguments_are_said_as_the_callers(tmp_path) -> None:
    """compress(x, 'adaptive') and prior_options=[1] raised Python's own TypeErrors,
    base_name= without base= was dropped without a word, a progress that is not callable was
    blamed on the stream, and save_file(pipeline={...}) raised an AttributeError."""
    import lmgc_core
    from lmgc_core.safetensors.numpy import load_file, save_file

    x = np.arange(64, dtype=np.float32)
    blob = lmgc_core.compress(x)
    with pytest.raises(ConfigError, match="is a mapping"):
        lmgc_core.compress(x, "adaptive")
    with pytest.raises(ConfigError, match="prior_options is a mapping"):
        lmgc_core.decompress(blob, prior_options=[1])
    with pytest.raises(ConfigError, match="no base= was given"):
        lmgc_core.compress(x, base_name="step1.npy")
    with pytest.raises(TypeError, match="progress must be callable"):
        Pipeline.from_config({}).decompress(blob, progress=True)
    save_file({"w": x}, tmp_path / "w.safetensors", pipeline={"prior": "adaptive"})
    assert load_file(tmp_path / "w.safetensors")["w"].tobytes() == x.tobytes()


def test_running_out_of_memory_is_said_and_not_blamed_on_the_stream(monkeypatch) -> None:
    """An intact stream decoded under a memory limit said 'the header asks for more memory'
    and then guessed 'a component is not deterministic or the stream was altered'."""
    from lmgc_float.prior import FloatPrior

    import lmgc_core
    from lmgc_core.util.errors import OutOfMemoryError

    blob = lmgc_core.compress(np.linspace(-1, 1, 300, dtype=np.float32))

    def no_memory(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise MemoryError

    monkeypatch.setattr(FloatPrior, "decode_array", no_memory)
    said = "out of memory decoding an array of 1200 bytes"
    with pytest.raises(OutOfMemoryError, match=said) as e:
        lmgc_core.decompress(blob)
    assert "not deterministic" not in str(e.value)
