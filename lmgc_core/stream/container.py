"""The lmgc stream format (documented in ``docs/format.md``).

    magic "LMGC" | version u8 | header length u32 LE | header (zlib JSON) | header CRC32 u32 LE
    | block 0 | block 1 | ...

Versions differ only in how the header is deflated: versions 1 and 2 as a zlib stream against a
preset dictionary (version 2 appends the ``float`` prior's typical header text to version 1's);
version 3 as a raw deflate stream (no zlib header or Adler-32: the CRC32 after it covers it)
against a dictionary that adds today's default headers (both levels of the ``float`` prior) and
the ``file`` record of a single-array file; version 4 puts language-model text in front of
version 3's dictionary, version 5 appends a stored-only header without a fingerprint (what
version 5's writer leaves out of such a stream). Every version is read.

Every block is one independently decodable batch of windows; its byte length and CRC32 are in
the header, so corruption is caught before a decoder sees garbage and points at the block that
broke. The header also carries the SHA-256 of the bytes decoding must reproduce.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import struct
import threading
import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmgc_core.util.caches import drop_oldest
from lmgc_core.util.errors import ConfigError, StreamError, TruncatedStreamError
from lmgc_core.util.join import join_bytes
from lmgc_core.util.parallel import map_ordered

MAGIC = b"LMGC"
VERSION = 5
_PREFIX = struct.Struct("<4sBI")
_CRC = struct.Struct("<I")
MAX_HEADER = 64 << 20
"""Cap on the *compressed* header (the length field)."""
MAX_HEADER_TEXT = 16 << 20
"""Cap on the header's JSON text once inflated. The biggest legitimate headers list blocks: a
1 GB float32 tensor coded with ``block_values: 1024`` lists 262,144 blocks in ~5.7 MB of text;
layouts and mixture experts add tens of KB. A deflate bomb stops here, never at its 1000x."""
MAX_ELEMENTS = 1 << 20
"""Cap on JSON values (containers, numbers, strings) in a header: ~100 MB of Python objects for
lists of numbers, up to ~230 MB for nested one-key objects (measured: a hostile 39 KB stream),
and three times the 262,144-block header above. ``lmgc ls``/``info`` hold every member's."""
MAX_DEPTH = 64
"""Cap on JSON nesting. Real headers nest ~8 deep (a mixture's expert's layout's shape); a
deeper text would only exhaust the parser's recursion."""
MAX_BLOCKS = MAX_ELEMENTS // 3
"""Most blocks a header can list (each ``[size, crc]`` is three values): a prior may refuse to
lay out more before it builds the list (decoding) or writes the header (encoding)."""
HEADER_DICTIONARY = (
    b'"coder":{"name":"range"},"prior":{"name":"transformers","model":null,"device":"cpu",'
    b'"dtype":"float32","threads":1,"unmapped":"error"},"prior":{"name":"llamacpp",'
    b'"n_batch":512,"n_gpu_layers":0,"n_ubatch":512,"flash_attn":false,"backend":"llamacpp",'
    b'"llama_cpp_python":"0.3.36","model_format":"gguf","model_sha256":"token_map":"bytes-v1/'
    b'"stages":[{"name":"quantize","bits":8},{"name":"sparsify","keep":0.1,"method":"topk",'
    b'"seed":0,"index_format":"bitmask"}],"data.values","data.mask","min","max","scale",'
    b'{"array":{"dtype":"<f4","shape":[1024]},"parts":[{"blocks":[[2840,256500848]],'
    b'"count":1024,"dtype":"<f4","n_symbols":9216,"name":"data"}],"pipeline":{"batch":16384,'
    b'"coder":{"name":"range"},"prior":{"initial":0.25,"limit":1048576,"name":"adaptive"},'
    b'"serializer":{"byte_order":"big","bytes_per_group":4,"name":"hex","prefix":"",'
    b'"separator":" "},"stages":[],"window":512},"prior":{"initial":0.25,"limit":1048576,'
    b'"prior":"adaptive","version":2},"sha256":"'
)
"""A zlib preset dictionary of typical header text (format version 1): headers are compressed
against it, which roughly halves them, and that matters for small Zarr chunks."""

HEADER_DICTIONARIES = {
    1: HEADER_DICTIONARY,
    2: HEADER_DICTIONARY
    + b'"stages":[{"parts":{"data":{"bits":8,"dtype":"<f4","max":"0x3e9a6f49","min":"0xbf071cc7",'
    b'"mode":"linear"}}}]},"prior":{"block_values":1048576,"layout":[[256,64],[256],[10,256],[10]],'
    b'"prior":"float","version":1},"sha256":"'
    b'{"array":{"dtype":"<f4","shape":[8192]},"made_by":"lmgc 0.1.0","parts":[{"array":{"layout":'
    b'false,"model":"int","shape":[1024]},"blocks":[[3984,3560511766]],"coding":"array","count":8192,'
    b'"dtype":"|u1","name":"data"}],"pipeline":{"batch":16384,"coder":{"name":"range"},"prior":'
    b'{"block_values":1048576,"layout":null,"name":"float"},"serializer":{"byte_order":"big",'
    b'"bytes_per_group":4,"name":"hex","prefix":"","separator":" "},"stages":[],"window":512},'
    b'"prior":{"block_values":1048576,"layout":null,"prior":"float","version":1},"sha256":"',
}
"""Preset dictionary per format version. Version 2 adds the ``float`` prior's header text at the
end (zlib codes near matches cheapest): a default header shrinks from ~190 to ~110 bytes."""
HEADER_DICTIONARIES[3] = HEADER_DICTIONARIES[2] + (
    b'{"array":{"dtype":"<f4","shape":[]},"made_by":"lmgc 0.1.0","parts":[{"array":{"layout":'
    b'false,"model":"float","shape":[]},"blocks":[[]],"coding":"array","count":,"dtype":"<f4",'
    b'"name":"data"}],"pipeline":{"batch":16384,"coder":{"name":"range"},"prior":{"block_values":'
    b'1048576,"layout":null,"name":"float"},"serializer":{"byte_order":"big","bytes_per_group":4,'
    b'"name":"hex","prefix":"","separator":" "},"stages":[],"window":512},"prior":{"block_values":'
    b'1048576,"layout":null,"prior":"float","version":1},"sha256":"'
    b'"file":{"format":"raw"},"file":{"format":"npy","head":"\\u0093NUMPY\\u0001\\u0000v\\u0000'
    b"{'descr': '<f4', 'fortran_order': False, 'shape': (,), }" + b" " * 64 + b'\\n"},'
    b'{"array":{"dtype":"bfloat16","shape":[]},"checksum":"blocks-murmur3-x64-128","made_by":'
    b'"lmgc 0.1.0","parts":[{"array":{"layout":false,"model":"float","shape":[]},"blocks":[[]],'
    b'"coding":"array","count":,"dtype":"<f4","name":"data"}],"pipeline":{"batch":16384,'
    b'"coder":{"name":"range"},"prior":{"block_values":262144,"layout":null,"level":1,"name":'
    b'"float"},"serializer":{"byte_order":"big","bytes_per_group":4,"name":"hex","prefix":"",'
    b'"separator":" "},"stages":[],"window":512},"prior":{"block_values":262144,"fast_version":3,'
    b'"layout":null,"level":1,"prior":"float","version":1},"stages":[]}'
)
"""Version 3 appends (nearest last, where deflate codes matches cheapest) the ``float`` prior's
highest-level header, the ``file`` records of a single-array file and the fast level's header
(the default): a default header deflates to ~40 bytes (version 2: ~120). Never edit a version's
dictionary: streams of that version inflate against it."""
_LM_HEADERS = (
    b'{"array":{"dtype":"<f4","shape":[]},"made_by":"lmgc 0.1.0","parts":[{"blocks":[[]],'
    b'"coding":"stored","count":,"dtype":"<f4","name":"data","stored":{"steps":}}],'
    b'"pipeline":{"batch":8,"coder":{"name":"range"},"prior":{"cpu_capability":"AVX2",'
    b'"device":"cpu","dtype":"float32","model":null,"name":"transformers","threads":,'
    b'"unmapped":"error"},"serializer":{"byte_order":"big","bytes_per_group":4,"name":"hex",'
    b'"prefix":"","separator":" "},"stages":[],"window":2048},"prior":{"attention":"eager",'
    b'"backend":"transformers","cpu_capability":"AVX2","device":"cpu","dtype":"float32",'
    b'"head":"alphabet","impl":1,"model_format":"gguf","model_sha256":"'
    b'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53","threads":,'
    b'"token_map":"bytes-v1/error","torch":"2.","transformers":"5."},"sha256":"'
    b'"pipeline":{"batch":8,"coder":{"name":"range"},"prior":{"experts":[{"consult":[0,1],'
    b'"model":null,"n_batch":512,"n_gpu_layers":0,"name":"llamacpp","threads":null,'
    b'"unmapped":"error"},{"block_values":262144,"layout":null,"level":1,"name":"float",'
    b'"small_parts":"smaller"}],"fallback":false,"geometric":true,"lr":0.02,"model":null,'
    b'"name":"mix","share":0.0009765625,"uniform":true},"serializer":{"byte_order":"big",'
    b'"bytes_per_group":4,"name":"hex","prefix":"","separator":" "},"stages":[],"window":2048},'
    b'"prior":{"consult":[[0,1],null],"experts":[{"backend":"llamacpp","device":"cpu",'
    b'"flash_attn":false,"impl":1,"llama_cpp_python":"0.3.36","model_format":"gguf",'
    b'"model_sha256":"b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",'
    b'"n_batch":512,"n_gpu_layers":0,"n_ubatch":512,"system_info":"CPU: SSE3 SSSE3 AVX AVX2 '
    b'F16C FMA BMI2 AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16 LLAMAFILE OPENMP REPACK",'
    b'"threads":null,"token_map":"bytes-v1/error"},{"block_values":262144,"fast_version":3,'
    b'"layout":null,"level":1,"prior":"float","small_parts":"smaller","version":1}],'
    b'"geometric":true,"lr":1311,"prior":"mix","share":1024,"uniform":true,"version":1},'
    b'"sha256":"'
    b'{"array":{"dtype":"<f4","shape":[]},"made_by":"lmgc 0.1.0","parts":[{"blocks":[[]],'
    b'"count":,"dtype":"<f4","n_symbols":,"name":"data"}],"pipeline":{"batch":8,"coder":'
    b'{"name":"range"},"prior":{"model":null,"n_batch":512,"n_gpu_layers":0,"name":"llamacpp",'
    b'"threads":null,"unmapped":"error"},"serializer":{"byte_order":"big","bytes_per_group":4,'
    b'"name":"hex","prefix":"","separator":" "},"stages":[],"window":2048},"prior":{'
    b'"backend":"llamacpp","device":"cpu","flash_attn":false,"impl":1,"llama_cpp_python":'
    b'"0.3.36","model_format":"gguf","model_sha256":"'
    b'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53","n_batch":512,'
    b'"n_gpu_layers":0,"n_ubatch":512,"system_info":"CPU: SSE3 SSSE3 AVX AVX2 F16C FMA BMI2 '
    b'LLAMAFILE OPENMP REPACK","threads":null,"token_map":"bytes-v1/error"},"sha256":"'
)
"""Typical header text of the language-model priors (``llamacpp``, ``transformers``) and of a
``mix`` with a language model (the bundled SmolLM2's SHA-256 and llama.cpp's CPU features
included), and of a stored part: version 4's dictionary starts with it."""
_LM_TEMPLATES = (
    b'{"array":{"dtype":"<f4","shape":[]},"file":{"format":"npy","head":"\\u0093NUMPY\\u0001\\u'
    b"0000v\\u0000{'descr': '<f4', 'fortran_order': False, 'shape': (,), }                     "
    b'                                     \\n"},"made_by":"lmgc 0.1.0","parts":[{"blocks":[[]]'
    b',"count":,"dtype":"<f4","n_symbols":,"name":"data"}],"pipeline":{"batch":8,"coder":{"nam'
    b'e":"range"},"prior":{"experts":[{"consult":[0,1],"model":null,"n_batch":512,"n_gpu_layer'
    b's":0,"name":"llamacpp","threads":null,"unmapped":"error"},{"block_values":262144,"layout'
    b'":null,"level":1,"name":"float","small_parts":"smaller"}],"fallback":false,"geometric":t'
    b'rue,"lr":0.02,"model":null,"name":"mix","share":0.0009765625,"uniform":true},"serializer'
    b'":{"byte_order":"big","bytes_per_group":4,"name":"hex","prefix":"","separator":" "},"sta'
    b'ges":[],"window":2048},"prior":{"consult":[[0,1],null],"experts":[{"backend":"llamacpp",'
    b'"device":"cpu","flash_attn":false,"impl":1,"llama_cpp_python":"0.3.36","model_format":"g'
    b'guf","model_sha256":"b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53","'
    b'n_batch":512,"n_gpu_layers":0,"n_ubatch":512,"system_info":"CPU: SSE3 SSSE3 AVX AVX2 F16'
    b'C FMA BMI2 LLAMAFILE OPENMP REPACK","threads":null,"token_map":"bytes-v1/error"},{"block'
    b'_values":262144,"fast_version":3,"layout":null,"level":1,"prior":"float","small_parts":"'
    b'smaller","version":1}],"geometric":true,"lr":1311,"prior":"mix","share":1024,"uniform":t'
    b'rue,"version":1},"sha256":"","stages":[]}{"array":{"dtype":"<f4","shape":[]},"file":{"fo'
    b'rmat":"npy","head":"\\u0093NUMPY\\u0001\\u0000v\\u0000{\'descr\': \'<f4\', \'fortran_orde'
    b"r': False, 'shape': (,), }                                                          \\n"
    b'"},"made_by":"lmgc 0.1.0","parts":[{"blocks":[[]],"coding":"stored","count":,"dtype":"<f'
    b'4","name":"data","stored":{"steps":}}],"pipeline":{"batch":8,"coder":{"name":"range"},"p'
    b'rior":{"model":null,"n_batch":512,"n_gpu_layers":0,"name":"llamacpp","threads":null,"unm'
    b'apped":"error"},"serializer":{"byte_order":"big","bytes_per_group":4,"name":"hex","prefi'
    b'x":"","separator":" "},"stages":[],"window":2048},"prior":{"backend":"llamacpp","device"'
    b':"cpu","flash_attn":false,"impl":1,"llama_cpp_python":"0.3.36","model_format":"gguf","mo'
    b'del_sha256":"b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53","n_batch"'
    b':512,"n_gpu_layers":0,"n_ubatch":512,"system_info":"CPU: SSE3 SSSE3 AVX AVX2 F16C FMA BM'
    b'I2 LLAMAFILE OPENMP REPACK","threads":null,"token_map":"bytes-v1/error"},"sha256":"","st'
    b'ages":[]}'
)
"""Two whole headers, keys in the order a writer sorts them, numbers and digests left out: a
``mix`` of SmolLM2 (consulted on two digits) and ``float``, and SmolLM2 alone with its part
stored, each of a single-array ``.npy`` file (the compact form): deflate matches most of such a
header in a few long runs."""
HEADER_DICTIONARIES[4] = _LM_HEADERS + _LM_TEMPLATES + HEADER_DICTIONARIES[3]
"""Version 4 puts the language-model text in front of version 3's dictionary: the compact-form
header of SmolLM2 alone on 16 values shrinks from 281 to 107 bytes, of the demo's ``mix`` from 406
to 110 (see :data:`OLDEST_WRITTEN`).
Stored parts (``"coding": "stored"``, ``lmgc_core/coding/parts.py``) came with version 4;
readers before it refuse them as an unknown part coding."""
_UNBOUND = (
    b'{"array":{"dtype":"<f4","shape":[]},"file":{"format":"npy","head":"\\u0093NUMPY\\u0001\\u00'
    b"00v\\u0000{'descr': '<f4', 'fortran_order': False, 'shape': (,), }                       "
    b'                                   \\n"},"made_by":"lmgc 0.1.0","parts":[{"blocks":[[]],"'
    b'coding":"stored","count":,"dtype":"<f4","name":"data","stored":{"steps":}}],"pipeline":{'
    b'"batch":8,"coder":{"name":"range"},"prior":{"model":null,"n_batch":512,"n_gpu_layers":0,'
    b'"name":"llamacpp","threads":null,"unmapped":"error"},"serializer":{"byte_order":"big","b'
    b'ytes_per_group":4,"name":"hex","prefix":"","separator":" "},"stages":[],"window":2048},"'
    b'sha256":"","stages":[]}'
)
"""The compact-form header of SmolLM2 alone whose one part is stored, as version 5 writes it:
no ``prior`` fingerprint (a stream whose every part is stored is decoded by copying, so nothing
binds it to a model or machine; ``docs/format.md``), numbers and digest left out."""
HEADER_DICTIONARIES[5] = HEADER_DICTIONARIES[4] + _UNBOUND
"""Version 5 appends (nearest, where matches are cheapest) that header to version 4's
dictionary: the demo's stored SmolLM2 stream's header 107 bytes with the fingerprint at version
4 (177 where llama.cpp reports other CPU features), 97 without it at version 5, on any machine.
Version 5 is the first whose writer leaves a stored-only stream's fingerprint out; version 4
readers decode such a header correctly (they never read the fingerprint of a stored-only
stream) but refuse the version byte 5."""
_RAW = frozenset({3, 4, 5})
"""Versions whose header is a raw deflate stream (zlib's own header and Adler-32 left out)."""


def deflate_header(text: bytes, version: int | None = None) -> bytes:
    """``text`` deflated as a header of format ``version`` (default: :data:`VERSION`), as
    :func:`read_header` inflates it."""
    version = VERSION if version is None else version
    bits = -15 if version in _RAW else 15
    packer = zlib.compressobj(
        9, zlib.DEFLATED, bits, 9, zlib.Z_DEFAULT_STRATEGY, HEADER_DICTIONARIES[version]
    )
    return packer.compress(text) + packer.flush()


@dataclass
class Container:
    header: dict[str, Any]
    blocks: list[memoryview]
    """Views into the stream (no copy), each CRC-checked (unless ``unpack`` was told that the
    decoder checks them itself)."""


def block_sizes(header: dict[str, Any]) -> list[tuple[int, int]]:
    """``(size, crc32)`` of every block, in stream order."""
    try:
        return [(int(s), int(c)) for part in header["parts"] for s, c in part["blocks"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise StreamError(f"header lists no valid blocks: {exc}") from None


_SCAN_CHUNK = 1 << 20
_BACKSLASH, _QUOTE = ord("\\"), ord('"')
_DELTA = np.zeros(256, dtype=np.int8)
_DELTA[list(b"[{")] = 1
_DELTA[list(b"]}")] = -1
_VALUE = np.zeros(256, dtype=bool)
_VALUE[list(b",[{")] = True


def check_json_text(
    text: bytes,
    what: str = "header",
    max_bytes: int | None = None,
    max_values: int | None = None,
    max_depth: int | None = None,
) -> None:
    """Refuse JSON text over the caps on size, values and nesting *before* it is parsed:
    ``json.loads`` would spend gigabytes on 200 KB of ``[]`` or recurse out of the stack on
    100,000 ``[``. Raises :class:`StreamError`. Unset caps are a stream header's (an archive's
    manifest passes its own).

    One linear pass in 1 MiB chunks (a few MB of scratch): brackets and commas inside strings
    (escaped quotes respected) do not count, so no string can hide or fake nesting."""
    max_bytes = MAX_HEADER_TEXT if max_bytes is None else max_bytes
    max_values = MAX_ELEMENTS if max_values is None else max_values
    max_depth = MAX_DEPTH if max_depth is None else max_depth
    if len(text) > max_bytes:
        raise StreamError(f"{what} is over {max_bytes} bytes of JSON")
    if len(text) < max_values and (
        text.count(b"[") + text.count(b"{") <= max_depth or _shallow(text, max_depth)
    ):
        return  # fewer values than bytes, no deeper than max_depth: a header of a few KB
    values, depth, in_string, backslashes = 1, 0, 0, 0
    for start in range(0, len(text), _SCAN_CHUNK):
        chunk = np.frombuffer(text, dtype=np.uint8, count=min(_SCAN_CHUNK, len(text) - start),
                              offset=start)  # fmt: skip
        quote = chunk == _QUOTE
        if backslashes or text.find(b"\\", start, start + chunk.size) >= 0:
            # a quote after an odd run of backslashes is escaped (runs carry across chunks)
            idx = np.arange(chunk.size, dtype=np.int32)
            last_other = np.maximum.accumulate(np.where(chunk == _BACKSLASH, -1, idx))
            run = idx - last_other + np.where(last_other < 0, backslashes, 0)
            quote[1:] &= run[:-1] % 2 == 0
            quote[0] &= backslashes % 2 == 0
            backslashes = int(run[-1])
        outside = (np.cumsum(quote, dtype=np.int32) + in_string) % 2 == 0
        outside &= ~quote
        in_string = (in_string + int(np.count_nonzero(quote))) % 2
        values += int(np.count_nonzero(_VALUE[chunk] & outside))
        if values > max_values:
            raise StreamError(f"{what} holds over {max_values} JSON values")
        delta = np.where(outside, _DELTA[chunk], 0)
        if depth + int(np.count_nonzero(delta > 0)) > max_depth:  # else it cannot get there
            levels = depth + np.cumsum(delta, dtype=np.int32)
            if int(levels.max()) > max_depth:
                raise StreamError(f"{what} nests JSON deeper than {max_depth} levels")
        depth += int(delta.sum(dtype=np.int64))


_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{}"')
_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")


def _shallow(text: bytes, max_depth: int) -> bool:
    """True when ``text``, without escapes, nests brackets at most ``max_depth`` deep (else
    ``False``: deep, unbalanced or escaped, left to the exact scan). A layout's header has
    hundreds of brackets: this costs ~6 us where the scan costs ~50.

    Without a backslash every ``"`` opens or closes a string. With all but brackets and quotes
    taken out, a string without brackets is an adjacent ``""`` pair; where none is left after
    those pairs go, every bracket is outside strings (else the even pieces between quotes are
    the outside: splitting there costs ~10 us on a layout's header). Each pass of
    ``replace(b"[]", b"")`` then takes away exactly the innermost pairs (one level), so the
    brackets vanish within ``max_depth`` passes iff no deeper."""
    if b"\\" in text:
        return False
    brackets = text.translate(_AS_BRACKETS, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in brackets:  # a string holding a bracket, or an open one
        pieces = text.split(b'"')
        if len(pieces) % 2 == 0:  # an open string: not JSON
            return False
        brackets = b"".join(pieces[::2]).translate(_AS_BRACKETS, _NOT_STRUCTURE)
    for _ in range(max_depth):
        if not brackets:
            return True
        brackets = brackets.replace(b"[]", b"")
    return not brackets


SMALL_HEADER = 1 << 16
"""Header text up to this size is deflated against both written dictionaries (the smaller kept;
a 64 KB float32 Zarr chunk's 672-byte header: 9 us against version 3's dictionary, 14 us against
version 5's, ~24 us for both, of a ~890 us chunk encode); a longer one (a block list) only
against the newest: a second pass would cost milliseconds for a saving of a few bytes in
megabytes."""
OLDEST_WRITTEN = 3
"""A writer chooses between this version and :data:`VERSION` by the size of the deflated header
(the older on a tie): version 4's (and 5's) dictionary adds language-model text in front of
version 3's,
which shrinks LM and ``mix`` headers by ~170-290 bytes but moves every other header's matches,
which deflate then codes a few bytes longer or shorter. Choosing keeps every header at most as
long as version 3 made it (and most streams readable by version 3 readers)."""


def _smallest_header(text: bytes) -> tuple[int, bytes]:
    """``(version, deflated text)`` of the shortest header, the older version on a tie."""
    if len(text) > SMALL_HEADER:
        return VERSION, deflate_header(text, VERSION)
    written = sorted({min(OLDEST_WRITTEN, VERSION), VERSION})
    options = [(len(h), v, h) for v in written for h in [deflate_header(text, v)]]
    _, version, head = min(options, key=lambda o: o[:2])
    return version, head


def pack(header: dict[str, Any], blocks: list[bytes], jobs: int | None = 1) -> bytes:
    """The stream of ``header`` and ``blocks`` (joined on up to ``jobs`` threads when big)."""
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    try:  # never write a header that decoding would refuse
        check_json_text(text)
    except StreamError as exc:
        raise ConfigError(
            f"the stream header would be too big ({exc}): use fewer, larger blocks"
        ) from None
    version, head = _smallest_header(text)
    prefix = _PREFIX.pack(MAGIC, version, len(head))
    crc = _CRC.pack(zlib.crc32(prefix + head))
    return join_bytes([prefix, head, crc, *blocks], jobs)


def read_header(blob: bytes) -> tuple[dict[str, Any], int]:
    """Parse and verify the header; returns it and the offset of the first block."""
    text, offset = _header_text(blob)
    return _parse_header(text), offset


def read_header_keyed(
    blob: bytes, names: tuple[str, ...]
) -> tuple[tuple[dict[str, Any], int], str | None]:
    """:func:`read_header`'s result and a key of the header's top-level entries ``names``: their
    exact JSON text as written (length-prefixed, ``0:`` for an absent one), which determines
    their values, so it may key a cache of what is built from them without a second pass to
    re-encode them (~8 us of a small tensor's ~200 us decode; a model's layout, ~25 us). The
    key is ``None`` when the text is not in the compact form writers use (any whitespace or
    other bytes between the entries): the same header is then parsed as by ``json.loads``."""
    text, offset = _header_text(blob)
    parsed = _compact_object(text, names)
    if parsed is None:
        return (_parse_header(text), offset), None
    header, spans, s = parsed
    key = []
    for name in names:
        start, end = spans.get(name, (0, 0))
        key.append(f"{end - start}:{s[start:end]}")
    return (header, offset), "\n".join(key)


_SCAN_VALUE = json.scanner.make_scanner(json.JSONDecoder())
"""``json.loads``' own value scanner (its C one where built), so values parse exactly as there."""


_RECENT_VALUES: dict[str, dict[str, Any]] = {}
"""Per keyed entry name, the values recently parsed for it, by their exact text, most recently
used last (:func:`_compact_object`). Shared between the headers returned: read-only."""
RECENT_VALUES = 8
"""How many texts :data:`_RECENT_VALUES` keeps per name."""
_RECENT_LOCK = threading.Lock()


def _recent_value(s: str, at: int, name: str) -> tuple[Any, int] | None:
    """The value (and its end) of entry ``name`` whose text starts at ``s[at]``, when that text
    is one recently parsed for ``name``: a whole JSON value's text ends where its scan ends, so
    a match followed by ``,`` or ``}`` is that value, and the header's parse skips it (a
    model's layout is written twice in each tensor's header: ~60 of ~100 us for PP-OCRv4's).
    Under :data:`_RECENT_LOCK`: threads decoding other streams reorder and evict entries."""
    with _RECENT_LOCK:
        recent = _RECENT_VALUES.get(name)
        if not recent:
            return None
        for seen in reversed(recent):  # most recent first
            stop = at + len(seen)
            if s.startswith(seen, at) and s[stop : stop + 1] in (",", "}"):
                recent[seen] = value = recent.pop(seen)  # the most recently used: last
                return value, stop
        return None


def _remember_value(name: str, seen: str, value: Any) -> None:
    """Keep ``value`` (an object or array: a number's text may be a prefix of another's) as
    the parse of ``seen`` for entry ``name``, the oldest of :data:`RECENT_VALUES` dropped."""
    if not isinstance(value, dict | list):
        return
    with _RECENT_LOCK:
        recent = _RECENT_VALUES.setdefault(name, {})
        drop_oldest(recent, RECENT_VALUES)
        recent[seen] = value


def _compact_object(
    text: bytes, remembered: tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict[str, tuple[int, int]], str] | None:
    """``json.loads(text)`` of a checked header text (:func:`check_json_text`) written as
    writers write it, an ASCII object without whitespace between its entries, with the span of
    each top-level entry's value in the decoded text; ``None`` for any other text (or one
    ``json.loads`` refuses). Each value is read by ``json.loads``' own scanner and the entries
    are joined as ``json.loads`` joins them (a repeated key keeps its last value), so the
    header is the same dictionary; only the spans are new.

    The values of the entries ``remembered`` names are reused from recent headers whose text
    for them was the same (:func:`_recent_value`): the same objects, which readers must not
    change."""
    try:
        s = text.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not s.startswith('{"'):
        return None
    header: dict[str, Any] = {}
    spans: dict[str, tuple[int, int]] = {}
    index, end = 1, len(s)
    scan, scan_string = _SCAN_VALUE, json.decoder.scanstring
    try:
        while s[index] == '"':
            name, index = scan_string(s, index + 1, True)
            if s[index] != ":":
                return None
            hit = _recent_value(s, index + 1, name) if name in remembered else None
            if hit is not None:
                header[name], stop = hit
            else:  # a repeated name: first place, last value
                header[name], stop = scan(s, index + 1)
                if name in remembered:
                    _remember_value(name, s[index + 1 : stop], header[name])
            spans[name] = (index + 1, stop)
            if s[stop] == ",":
                index = stop + 1
            elif s[stop] == "}" and stop + 1 == end:
                return header, spans, s
            else:
                return None
        return None
    except (ValueError, StopIteration, IndexError, RecursionError):
        return None


def stream_bytes(blob: Any) -> bytes | memoryview:
    """``blob`` as the bytes it holds, in memory order: a buffer of other items or of more
    dimensions (an int8 or a 2-D uint8 array, ``memoryview.cast('I')``) as one of unsigned
    bytes, which it is read as (its items, rows or signed bytes were: an intact stream was
    called corrupted). A ``TypeError`` for what is not a buffer, or not a contiguous one."""
    if isinstance(blob, bytes):
        return blob
    try:
        view = memoryview(blob)
    except TypeError:  # memoryview's own words name no stream ("a bytes-like object ...")
        hint = ": read the file in binary mode" if isinstance(blob, str) else ""
        raise TypeError(
            f"an lmgc stream is bytes (bytes, bytearray, memoryview), not a "
            f"{type(blob).__name__}{hint}"
        ) from None
    if not view.c_contiguous:
        raise TypeError(
            "an lmgc stream is contiguous bytes: this buffer is a strided view "
            "(np.ascontiguousarray or bytes() of it is the stream)"
        )
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _header_text(blob: bytes) -> tuple[bytes, int]:
    """The verified, inflated and bounded JSON text of the header, and the first block's
    offset."""
    blob = memoryview(stream_bytes(blob))
    if len(blob) < _PREFIX.size:
        if bytes(blob[:4]) != MAGIC[: len(blob)]:
            raise StreamError("not an lmgc stream (bad magic)")
        raise TruncatedStreamError(f"stream is {len(blob)} bytes, too short for an lmgc header")
    magic, version, head_len = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise StreamError("not an lmgc stream (bad magic)")
    if version not in HEADER_DICTIONARIES:
        raise StreamError(
            f"unsupported lmgc format version {version} (this lmgc reads versions "
            f"{', '.join(map(str, HEADER_DICTIONARIES))})"
        )
    if head_len > MAX_HEADER:
        raise StreamError(f"header length {head_len} is implausible")
    end = _PREFIX.size + head_len
    if len(blob) < end + _CRC.size:
        raise TruncatedStreamError("stream ends inside its header")
    (crc,) = _CRC.unpack_from(blob, end)
    if zlib.crc32(blob[:end]) != crc:
        raise StreamError("header checksum mismatch: the stream header is corrupted")
    try:
        bits = -15 if version in _RAW else 15
        unpacker = zlib.decompressobj(bits, HEADER_DICTIONARIES[version])
        # inflate at most one byte past the cap: a deflate bomb stops here
        text = unpacker.decompress(blob[_PREFIX.size : end], MAX_HEADER_TEXT + 1)
        if len(text) > MAX_HEADER_TEXT or unpacker.unconsumed_tail:
            raise StreamError(f"header inflates to over {MAX_HEADER_TEXT} bytes")
        if not unpacker.eof:  # at its end a stream has given every byte: flush gives none
            text += unpacker.flush()
            if len(text) > MAX_HEADER_TEXT:
                raise StreamError(f"header inflates to over {MAX_HEADER_TEXT} bytes")
        if version in _RAW and (not unpacker.eof or unpacker.unused_data):
            raise StreamError("header is unreadable: not one whole deflate stream")
    except zlib.error as exc:
        raise StreamError(f"header is unreadable: {exc}") from None
    check_json_text(text)
    return text, end + _CRC.size


def _parse_header(text: bytes) -> dict[str, Any]:
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise StreamError(f"header is unreadable: {exc}") from None
    if not isinstance(header, dict):
        raise StreamError("header is not a JSON object")
    return header


def unpack(
    blob: bytes,
    head: tuple[dict[str, Any], int] | None = None,
    *,
    unverified_parts: Collection[int] = (),
    crc32: Callable[[memoryview], int] | None = None,
    jobs: int | None = 1,
) -> Container:
    """The header and CRC-checked blocks; ``head`` is :func:`read_header`'s result when the
    caller has it already (its checks ran on the header before the blocks).

    ``unverified_parts``: indices of parts whose blocks' CRC32s are left unchecked (sizes and
    total length are always checked): only for parts whose decoder catches every changed byte of
    a block itself (see "What checks what" in ``docs/format.md``). The CRC32s are still written,
    so ``lmgc ls``/``info`` and any other decoder check them.

    ``crc32``: a faster function of zlib's CRC-32 (the same values) to check blocks with (a
    prior's compiled one, see ``Pipeline.decompress``); ``zlib.crc32`` by default.

    ``jobs``: threads to compute the CRC32s of a big stream on (both functions release the GIL):
    they run before any block decodes, so on one thread they would be the serial part of a
    parallel decode (100 MB of float32 at the fast level: ~4 of ~40 ms on two cores)."""
    crc = zlib.crc32 if crc32 is None else crc32
    header, offset = read_header(blob) if head is None else head
    sizes = block_sizes(header)
    expected = offset + sum(s for s, _ in sizes)
    if len(blob) < expected:
        raise TruncatedStreamError(
            f"stream is truncated: {len(blob)} bytes, its header promises {expected}"
        )
    if len(blob) > expected:
        raise StreamError(f"stream has {len(blob) - expected} unexpected trailing bytes")
    blocks = []
    view = memoryview(stream_bytes(blob))
    for size, _ in sizes:
        blocks.append(view[offset : offset + size])  # zero-copy: they stay in the blob
        offset += size
    skipped = _blocks_of(header, unverified_parts) if unverified_parts else frozenset()
    checked = [i for i in range(len(blocks)) if i not in skipped]
    if not checked:  # every part's decoder checks its own blocks (a small tensor's one part)
        return Container(header, blocks)
    values = block_crc32s([blocks[i] for i in checked], crc, jobs)
    for i, value in zip(checked, values, strict=True):
        if value != sizes[i][1]:  # the first damaged block in stream order
            raise StreamError(f"block {i} is corrupted (CRC32 mismatch)")
    return Container(header, blocks)


PARALLEL_CRC_BYTES = 1 << 22
"""Blocks of fewer bytes in all are checked on the calling thread: starting threads costs more
than their CRC32s (~0.2 ms at 22 GB/s)."""


def block_crc32s(
    blocks: Sequence[bytes | memoryview],
    crc32: Callable[[Any], int] = zlib.crc32,
    jobs: int | None = 1,
) -> list[int]:
    """The CRC32 of every block by ``crc32`` (zlib's, or a function of the same values), on up to
    ``jobs`` threads where the blocks hold :data:`PARALLEL_CRC_BYTES` or more (CRC functions
    release the GIL: on one thread they would be the serial part of a parallel encode or
    decode, ~4-7 ms of 100 MB)."""
    if sum(map(len, blocks)) < PARALLEL_CRC_BYTES:
        jobs = 1
    return map_ordered(crc32, blocks, jobs)


def _blocks_of(header: dict[str, Any], parts: Collection[int]) -> frozenset[int]:
    """Stream-order indices of the blocks of ``parts`` (indices into the header's parts)."""
    out, start = [], 0
    for index, part in enumerate(header["parts"]):  # block_sizes has checked the entries
        n = len(part["blocks"])
        if index in parts:
            out.extend(range(start, start + n))
        start += n
    return frozenset(out)
