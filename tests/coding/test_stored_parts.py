"""Never expand: a step-coded part whose blocks would be larger than its raw bytes is stored raw
(``"coding": "stored"``), decodes bit-exact without running the prior, and is checked like any
other part (its CRC32, its size, the stream's SHA-256)."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from lmgc_basic_priors.uniform import UniformPrior

from lmgc_core import Pipeline, decompress
from lmgc_core.coding import parts, pipeline
from lmgc_core.stream import container
from lmgc_core.util.errors import (
    ChecksumError,
    MismatchError,
    PluginError,
    StreamError,
    TruncatedStreamError,
)
from tests.conftest import same_bits

UNIFORM = {"prior": {"name": "uniform"}, "window": 64}
"""The uniform prior codes every hex digit in 4 bits: the data's own size plus each block's
coder flush, so it expands every part (many small windows: many blocks)."""


def _specials(grads: np.ndarray) -> np.ndarray:
    data = grads[:300].copy()
    data[:6] = np.array([0x7FC00001, 0xFFC12345, 0x80000000, 0x7F800000, 0x00000001, 0x807FFFFF],
                        dtype="<u4").view("<f4")  # fmt: skip
    return data


def _coded(blob: bytes) -> int:
    return sum(len(b) for b in container.unpack(blob).blocks)


def test_an_expanding_prior_is_stored_and_decodes_bit_exact(grads):
    data = _specials(grads)
    blob = Pipeline.from_config(UNIFORM).compress(data)
    (part,) = container.read_header(blob)[0]["parts"]
    assert part["coding"] == "stored" and part["blocks"][0][0] == data.nbytes
    assert part["stored"]["steps"] > data.nbytes  # what the uniform prior's blocks took
    assert _coded(blob) == data.nbytes
    assert len(blob) <= data.nbytes + 160  # the header (with its SHA-256), nothing else
    assert same_bits(decompress(blob), data)


def test_a_prior_that_compresses_keeps_its_coded_blocks(grads):
    data = grads[:256]
    blob = Pipeline.from_config({"prior": {"name": "adaptive"}}).compress(data)
    (part,) = container.read_header(blob)[0]["parts"]
    assert "coding" not in part and _coded(blob) < data.nbytes
    assert same_bits(decompress(blob), data)


def test_stages_parts_are_stored_one_by_one(grads):
    """Only the parts that expand are stored (here quantize's values, under uniform)."""
    data = grads[:512]
    cfg = {**UNIFORM, "stages": [{"name": "sparsify", "keep": 0.2}, {"name": "quantize"}]}
    pipe = Pipeline.from_config(cfg)
    blob = pipe.compress(data)
    codings = [p.get("coding") for p in container.read_header(blob)[0]["parts"]]
    assert "stored" in codings
    assert same_bits(decompress(blob), pipe.reconstruct(data))


def test_decoding_a_stored_part_never_runs_the_prior(grads, monkeypatch):
    data = grads[:200]
    blob = Pipeline.from_config(UNIFORM).compress(data)
    assert container.read_header(blob)[0]["parts"][0]["coding"] == "stored"

    def refuse(*args, **kwargs):
        raise AssertionError("the prior ran on a stored part")

    monkeypatch.setattr(UniformPrior, "open", refuse)
    assert same_bits(decompress(blob), data)


def test_a_changed_or_truncated_stored_block_is_refused(grads):
    data = grads[:200]
    blob = Pipeline.from_config(UNIFORM).compress(data)
    header, offset = container.read_header(blob)
    assert header["parts"][0]["coding"] == "stored"
    for at in (offset, offset + data.nbytes // 2, len(blob) - 1):
        bad = bytearray(blob)
        bad[at] ^= 0x10
        with pytest.raises(StreamError, match="block 0 is corrupted"):
            decompress(bytes(bad))
    with pytest.raises(TruncatedStreamError):
        decompress(blob[:-1])


def _repacked(blob: bytes, edit) -> bytes:
    header, offset = container.read_header(blob)
    header = json.loads(json.dumps(header))
    block = edit(header, bytes(blob[offset:]))
    return container.pack(header, [block])


def test_a_stored_block_of_another_size_is_refused(grads):
    """A header that lists a stored block shorter than the part (its CRC32 and the total length
    made consistent) is refused by the part's size, not read past or padded."""
    data = grads[:200]
    blob = Pipeline.from_config(UNIFORM).compress(data)

    def shorter(header, block):
        block = block[:-4]
        header["parts"][0]["blocks"] = [[len(block), zlib.crc32(block)]]
        return block

    with pytest.raises(StreamError, match="stored as blocks of"):
        decompress(_repacked(blob, shorter))


def test_a_reader_without_stored_parts_refuses_them_by_name(grads, monkeypatch):
    """What a version-3 reader says of a stored part: the header has no fingerprint to match
    (a stored-only stream's is left out), and forced past that check, an unknown coding; never
    a mis-decode."""
    blob = Pipeline.from_config(UNIFORM).compress(grads[:200])
    monkeypatch.delitem(parts.CODERS, "stored")
    monkeypatch.setattr(pipeline, "stored_only", lambda header: False)
    with pytest.raises(MismatchError, match="prior: stream has None"):
        decompress(blob)
    with pytest.raises(StreamError, match="unknown part coding 'stored'"):
        decompress(blob, force=True)


def test_lmgc_info_says_a_part_is_stored_and_what_its_prior_took(grads, tmp_path):
    from click.testing import CliRunner

    from lmgc_core.cli.commands import cli

    src, packed = tmp_path / "g.npy", tmp_path / "g.lmgc"
    np.save(src, grads[:200])
    runner = CliRunner()
    made = runner.invoke(cli, ["compress", str(src), "-o", str(packed), "--prior", "uniform"])
    assert made.exit_code == 0, made.output
    took = container.read_header(packed.read_bytes())[0]["parts"][0]["stored"]["steps"]
    shown = runner.invoke(cli, ["info", str(packed)])
    assert shown.exit_code == 0, shown.output
    assert f"stored raw (the prior's coding: {took} bytes)" in shown.output
    assert "fingerprint none: every part stored" in shown.output


def test_a_stored_stream_decodes_without_building_its_prior(grads, monkeypatch):
    """Nothing of the prior is used: a stored stream decodes where the prior cannot be built (a
    language model not installed, another build), and its fingerprint is not compared."""
    data = grads[:200]
    blob = Pipeline.from_config(UNIFORM).compress(data)
    monkeypatch.setattr(pipeline, "_RECORDED_PIPELINES", {})

    def missing(self, *args, **kwargs):
        raise PluginError("the prior is not installed here")

    monkeypatch.setattr(UniformPrior, "__init__", missing)
    assert same_bits(decompress(blob), data)
    moved = _repacked(blob, lambda header, block: header.__setitem__("prior", {}) or block)
    assert same_bits(decompress(moved), data)


def test_a_stored_stream_is_checked_against_its_sha256(grads):
    blob = Pipeline.from_config(UNIFORM).compress(grads[:200])
    wrong = _repacked(blob, lambda header, block: header.__setitem__("sha256", "0" * 64) or block)
    with pytest.raises(ChecksumError, match="SHA-256"):
        decompress(wrong)
    none = _repacked(blob, lambda header, block: header.pop("sha256") and block)
    with pytest.raises(StreamError, match="sha256"):
        decompress(none)


def test_lmgc_decompress_of_a_stored_file_compares_no_fingerprint(grads, tmp_path):
    """A stored stream recording a prior this machine's differs from (another version, another
    build) decompresses: its prior is not used, so there is nothing to refuse."""
    from click.testing import CliRunner

    from lmgc_core.cli.commands import cli

    src, packed, back = tmp_path / "g.npy", tmp_path / "g.lmgc", tmp_path / "b.npy"
    np.save(src, grads[:200])
    runner = CliRunner()
    made = runner.invoke(cli, ["compress", str(src), "-o", str(packed), "--prior", "uniform"])
    assert made.exit_code == 0, made.output
    assert "prior" not in container.read_header(packed.read_bytes())[0]  # nothing binds it
    other = _repacked(  # as version 4 wrote it: with the fingerprint, here of another build
        packed.read_bytes(),
        lambda header, block: header.update(prior={"prior": "uniform", "version": 99}) or block,
    )
    packed.write_bytes(other)
    done = runner.invoke(cli, ["decompress", str(packed), "-o", str(back)])
    assert done.exit_code == 0, done.output
    assert back.read_bytes() == src.read_bytes()


def test_a_stored_only_header_leaves_the_fingerprint_out(grads, monkeypatch):
    """Nothing of the prior decodes a stored-only stream, so nothing binds it to a machine: its
    header keeps what was tried (the pipeline config, ``made_by``, the prior's code length) but
    not the prior's fingerprint, and its size does not depend on it (an LM's records its model's
    SHA-256 and llama.cpp's CPU features). A stream with a coded part keeps its fingerprint."""
    data = grads[:200]
    blob = Pipeline.from_config(UNIFORM).compress(data)
    header = container.read_header(blob)[0]
    assert "prior" not in header and header["pipeline"]["prior"] == {"name": "uniform"}
    assert header["made_by"] and header["parts"][0]["stored"]["steps"] > data.nbytes
    bound = {"prior": "uniform", "version": 1, "system_info": "CPU: " + "AVX512_X " * 40}
    monkeypatch.setattr(UniformPrior, "fingerprint", lambda self: bound)
    assert Pipeline.from_config(UNIFORM).compress(data) == blob
    coded = Pipeline.from_config({"prior": {"name": "adaptive"}}).compress(data)
    assert "prior" in container.read_header(coded)[0]


@pytest.mark.parametrize("level", [1, 2])
def test_a_float_config_of_tiny_blocks_is_stored_not_expanded(grads, level):
    """One value per block took 6.7x the raw bytes (each block's sizes and checksum): such a
    part is stored, with the stream's SHA-256 instead of the blocks' value checksums."""
    data = _specials(grads)
    config = {"prior": {"name": "float", "level": level, "block_values": 1}}
    blob = Pipeline.from_config(config).compress(data)
    header = container.read_header(blob)[0]
    (part,) = header["parts"]
    assert part["coding"] == "stored" and part["stored"]["array"] > 3 * data.nbytes
    assert "sha256" in header and "checksum" not in header
    assert len(blob) <= data.nbytes + 200
    assert same_bits(decompress(blob), data)


def test_a_float_part_of_noise_keeps_its_blocks_and_their_checksums():
    """Random bits cost the float prior's raw blocks a few bytes each: within ARRAY_SLACK, so
    the part keeps its coding (and its per-block checksums, faster to check than SHA-256)."""
    noise = np.random.default_rng(5).integers(0, 2**32, 5000, dtype=np.uint32).view(np.float32)
    for values in (noise[:1], noise[:10], noise):
        blob = Pipeline.from_config({"prior": {"name": "float"}}).compress(values)
        header = container.read_header(blob)[0]
        assert header["parts"][0]["coding"] == "array" and "checksum" in header
        assert same_bits(decompress(blob), values)
