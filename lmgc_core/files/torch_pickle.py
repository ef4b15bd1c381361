"""What a ``torch.save`` pickle (``data.pkl``) says about its tensors, read without running it.

``pickle.load`` runs whatever the pickle names (``os.system`` as easily as ``OrderedDict``), so
this module never calls it, never imports a global the pickle names, and never imports torch. It
parses the opcodes (:func:`pickletools.genops`) and follows them on a stack of inert values:
plain numbers, strings, lists, dicts; the records torch writes for storages (its persistent ids
``('storage', torch.FloatStorage, key, location, numel)``) and tensors (``_rebuild_tensor_v2``
and kin) become :class:`StorageRef` and :class:`TensorRef`. Any other global becomes an
:class:`Opaque` value and is listed in :attr:`PickleInfo.refused`, so the caller can say so.
The pickle's bytes themselves are kept verbatim by the caller; only the storages' dtypes and
the tensors' shapes come from here.
"""

from __future__ import annotations

import pickletools
import re
from dataclasses import dataclass, field
from typing import Any

from lmgc_core.util.errors import LMGCError


class PickleReadError(LMGCError):
    """The pickle is malformed or uses an opcode this reader does not follow."""


@dataclass(frozen=True)
class Global:
    """A global the pickle names (``GLOBAL``/``STACK_GLOBAL``): a name, never imported."""

    module: str
    name: str

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(eq=False)
class Opaque:
    """A value this reader does not model (a call of a global it does not allow, ...)."""

    what: str
    inner: list[Any] = field(default_factory=list)
    """What it was made from (arguments, BUILD state): walked only to name the tensors in it
    (``torch.save(model)`` keeps its parameters in a module's state)."""


@dataclass
class PDict:
    """A dict (or ``OrderedDict``) as its items in order: keys need not be hashable here."""

    items: list[tuple[Any, Any]] = field(default_factory=list)


@dataclass
class PSet:
    """A set or frozenset as its items (unhashable here too)."""

    items: list[Any] = field(default_factory=list)


@dataclass
class StorageRef:
    """One storage record: ``data/<key>`` holds ``numel`` items of ``type_name``
    (``FloatStorage``...; ``UntypedStorage`` counts bytes)."""

    key: str
    type_name: str
    location: str
    numel: int


@dataclass
class TensorRef:
    """A tensor viewing a storage (``dtype`` is torch's name when the record gives it apart
    from the storage type: ``_rebuild_tensor_v3`` on an untyped storage)."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str | None = None
    path: str | None = None
    """Where it lies in the saved object (``model/fc1.weight``), when reachable."""
    also: list[str] = field(default_factory=list)
    """Its other places, where the same tensor object is saved again (``{"a": w, "b": w}``:
    pickle writes it once), at most :data:`MAX_ALSO`."""


@dataclass
class PickleInfo:
    storages: dict[str, StorageRef]
    """By key, in the order the pickle first names them."""
    tensors: list[TensorRef]
    refused: list[str]
    """Globals (and opcodes) the pickle asks for that are not tensors or plain containers."""
    root: Any = None
    views: dict[str, list[TensorRef]] = field(default_factory=dict)
    """The tensors on each storage, by storage key."""

    def __post_init__(self) -> None:
        for tensor in self.tensors:
            self.views.setdefault(tensor.storage.key, []).append(tensor)


STORAGE_TYPES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    "QInt8Storage": "int8",
    "QUInt8Storage": "uint8",
    "QInt32Storage": "int32",
    "QUInt4x2Storage": "uint8",
    "QUInt2x4Storage": "uint8",
}
"""torch's typed storage classes (``torch.FloatStorage``) and the dtype of their items (the
quantized ones as the integers they hold)."""
TORCH_DTYPES = (
    "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
    "uint16", "uint32", "uint64", "bool", "complex64", "complex128", "float8_e4m3fn",
    "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn_x2",
    "complex32",
)  # fmt: skip
"""``torch.<dtype>`` globals (``_rebuild_tensor_v3`` names the dtype of an untyped storage;
those numpy has no dtype for are coded as bytes)."""
_REBUILD_TENSOR = {"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3"}
_TENSOR_TYPES = {"torch._tensor.Tensor", "torch.Tensor", "torch.nn.parameter.Parameter"}
_FROM_TYPE = {"torch._tensor._rebuild_from_type_v2", "torch._utils._rebuild_from_type_v2"}
"""Where torch writes a tensor with Python attributes from (``torch._tensor``; the second
name was never torch's, and such tensors were read as unsafe and lost their names)."""
_ALLOWED = (
    {f"torch.{n}" for n in [*STORAGE_TYPES, *TORCH_DTYPES]}
    | {f"torch._utils.{n}" for n in _REBUILD_TENSOR}
    | {f"torch._utils.{n}" for n in ("_rebuild_parameter", "_rebuild_parameter_with_state")}
    | _FROM_TYPE
    | {"torch.storage.UntypedStorage"}
    | {"torch.Size", "torch.device", "collections.OrderedDict", "_codecs.encode"}
    | {f"{m}.{n}" for m in ("builtins", "__builtin__") for n in ("set", "frozenset", "bytes")}
    | _TENSOR_TYPES
)
"""Every global the reader models: what ``torch.save`` writes for tensors and plain containers."""


def read_pickle(data: bytes) -> PickleInfo:
    """Follow ``data``'s opcodes; raises :class:`PickleReadError` if they make no sense."""
    reader = _Reader()
    try:
        root = reader.run(data)
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, RecursionError) as exc:
        raise PickleReadError(f"unreadable pickle ({type(exc).__name__}: {exc})") from None
    _name_tensors(root)
    return PickleInfo(reader.storages, reader.tensors, sorted(reader.refused), root)


class _Reader:
    def __init__(self) -> None:
        self.storages: dict[str, StorageRef] = {}
        self.tensors: list[TensorRef] = []
        self.refused: set[str] = set()

    def run(self, data: bytes) -> Any:
        stack: list[Any] = []
        marks: list[list[Any]] = []
        memo: dict[int, Any] = {}

        def pop_mark() -> list[Any]:
            """The items since the last MARK (call it before naming ``stack`` again)."""
            nonlocal stack
            items, stack = stack, marks.pop()
            return items

        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                if len(stack) != 1 or marks:
                    raise PickleReadError("pickle stops with a malformed stack")
                return stack.pop()
            if name == "MARK":
                marks.append(stack)
                stack = []
            elif name == "POP":
                if stack:
                    stack.pop()
                else:
                    pop_mark()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(stack[-1])
            elif name in _VALUES:
                stack.append(arg)
            elif name == "NONE":
                stack.append(None)
            elif name in ("NEWTRUE", "NEWFALSE"):
                stack.append(name == "NEWTRUE")
            elif name == "EMPTY_DICT":
                stack.append(PDict())
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name == "EMPTY_SET":
                stack.append(PSet())
            elif name == "TUPLE":
                items = pop_mark()
                stack.append(tuple(items))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = stack[-n:]
                if len(items) != n:
                    raise PickleReadError(f"{name} on a short stack")
                del stack[-n:]
                stack.append(tuple(items))
            elif name == "LIST":
                items = pop_mark()
                stack.append(items)
            elif name == "DICT":
                items = pop_mark()
                stack.append(PDict(_pairs(items)))
            elif name == "FROZENSET":
                items = pop_mark()
                stack.append(PSet(items))
            elif name == "APPEND":
                value = stack.pop()
                _extend(stack[-1], [value])
            elif name in ("APPENDS", "ADDITEMS"):
                items = pop_mark()
                _extend(stack[-1], items)
            elif name == "SETITEM":
                value = stack.pop()
                key = stack.pop()
                _set_items(stack[-1], [(key, value)])
            elif name == "SETITEMS":
                pairs = _pairs(pop_mark())
                _set_items(stack[-1], pairs)
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if int(arg) not in memo:
                    raise PickleReadError(f"{name} of memo entry {arg}, never stored")
                stack.append(memo[int(arg)])
            elif name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                stack.append(self.global_(module, attr))
            elif name == "STACK_GLOBAL":
                attr = stack.pop()
                module = stack.pop()
                if not isinstance(module, str) or not isinstance(attr, str):
                    raise PickleReadError("STACK_GLOBAL of non-strings")
                stack.append(self.global_(module, attr))
            elif name == "BINPERSID":
                stack.append(self.persistent(stack.pop()))
            elif name == "PERSID":
                stack.append(self.persistent(arg))
            elif name == "REDUCE":
                args = stack.pop()
                func = stack.pop()
                stack.append(self.call(func, args))
            elif name == "NEWOBJ":
                args = stack.pop()
                stack.append(self.opaque(stack.pop(), "NEWOBJ", args))
            elif name == "NEWOBJ_EX":
                kwargs, args = stack.pop(), stack.pop()
                stack.append(self.opaque(stack.pop(), "NEWOBJ_EX", args, kwargs))
            elif name == "BUILD":
                state = stack.pop()  # the state of the object below: never applied
                if isinstance(stack[-1], Opaque):
                    stack[-1].inner.append(state)
            elif name == "INST":
                items = pop_mark()
                module, _, attr = str(arg).partition(" ")
                stack.append(self.opaque(self.global_(module, attr), "INST", items))
            elif name == "OBJ":
                items = pop_mark()
                if not items:
                    raise PickleReadError("OBJ without a class")
                stack.append(self.opaque(items[0], "OBJ", items[1:]))
            elif name in ("EXT1", "EXT2", "EXT4", "NEXT_BUFFER", "READONLY_BUFFER"):
                self.refused.add(f"opcode {name}")
                stack.append(Opaque(name))
            else:
                raise PickleReadError(f"opcode {name} is not followed")
        raise PickleReadError("pickle ends without STOP")

    def global_(self, module: str, name: str) -> Global:
        g = Global(module, name)
        if g.qualname not in _ALLOWED:
            self.refused.add(g.qualname)
        return g

    def opaque(self, cls: Any, how: str, *inner: Any) -> Opaque:
        """An object made by ``how`` (NEWOBJ, INST...) from ``inner``: never modelled. A class
        not allowed is listed already (when named); an allowed one used this way is listed
        here."""
        what = cls.qualname if isinstance(cls, Global) else type(cls).__name__
        if what not in self.refused:
            self.refused.add(f"{how} of {what}")
        return Opaque(what, list(inner))

    def persistent(self, pid: Any) -> Any:
        """torch's storage record, checked and shared by key."""
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], Global)
            and isinstance(pid[2], str)
            and isinstance(pid[3], str)  # the location ("cpu"): a nested value was spelled
            and isinstance(pid[4], int)
            and not isinstance(pid[4], bool)
            and pid[4] >= 0
        ):
            self.refused.add("a persistent id that is not a storage record")
            return Opaque("persistent id")
        kind = pid[1]
        type_name = kind.name if kind.qualname in _ALLOWED else "?"
        ref = StorageRef(pid[2], type_name, pid[3], pid[4])
        known = self.storages.setdefault(ref.key, ref)
        if (known.type_name, known.numel) != (ref.type_name, ref.numel):
            raise PickleReadError(f"storage {ref.key!r} is recorded twice, differently")
        return known

    def call(self, func: Any, args: Any) -> Any:
        """A REDUCE: modelled for the allowed globals, :class:`Opaque` for anything else."""
        if not isinstance(func, Global) or not isinstance(args, tuple):
            return Opaque("call", [args])
        qual = func.qualname
        if qual not in _ALLOWED:
            return Opaque(qual, [args])
        module, name = func.module, func.name
        if module == "torch._utils" and name in _REBUILD_TENSOR:
            return self.tensor(name, args)
        if module == "torch._utils" and name.startswith("_rebuild_parameter"):
            return args[0] if args else Opaque(qual)
        if qual in _FROM_TYPE:
            if len(args) == 4 and isinstance(args[1], Global) and args[1].qualname in _TENSOR_TYPES:
                return self.call(args[0], args[2])
            return Opaque(qual)
        if qual == "collections.OrderedDict":
            items = args[0] if args else []
            if isinstance(items, PDict):
                return PDict(list(items.items))
            if isinstance(items, list) and all(_is_pair(i) for i in items):
                return PDict(list(items))
            return PDict() if not items else Opaque(qual)
        if qual == "torch.Size":
            return tuple(args[0]) if args and isinstance(args[0], (tuple, list)) else Opaque(qual)
        if qual == "_codecs.encode":
            if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
                return args[0].encode("latin-1")
            return Opaque(qual)
        if name == "bytes":
            return b""
        if name in ("set", "frozenset"):
            return PSet(list(args[0]) if args and isinstance(args[0], list) else [])
        return Opaque(qual)  # torch.device(...), storage types called: values we need not model

    def tensor(self, name: str, args: tuple[Any, ...]) -> Any:
        need = 7 if name == "_rebuild_tensor_v3" else 4
        if len(args) < need or not isinstance(args[0], StorageRef):
            self.refused.add(f"a malformed torch._utils.{name} record")
            return Opaque(name)
        storage, offset, shape, stride = args[:4]
        if not (_is_int(offset) and _ints(shape) and _ints(stride) and len(shape) == len(stride)):
            self.refused.add(f"a malformed torch._utils.{name} record")
            return Opaque(name)
        dtype = None
        if name == "_rebuild_tensor_v3":
            dt = args[6]
            dtype = dt.name if isinstance(dt, Global) and dt.qualname in _ALLOWED else "?"
        ref = TensorRef(storage, offset, tuple(shape), tuple(stride), dtype)
        self.tensors.append(ref)
        return ref


_VALUES = {
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES",
    "BINBYTES8", "BYTEARRAY8", "STRING", "BINSTRING", "SHORT_BINSTRING",
}  # fmt: skip


def _is_pair(x: Any) -> bool:
    return isinstance(x, tuple) and len(x) == 2


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _ints(xs: Any) -> bool:
    return isinstance(xs, tuple) and all(_is_int(x) for x in xs)


def _pairs(items: list[Any]) -> list[tuple[Any, Any]]:
    if len(items) % 2:
        raise PickleReadError("dict items of odd length")
    return list(zip(items[::2], items[1::2], strict=True))


def _extend(target: Any, items: list[Any]) -> None:
    if isinstance(target, list):
        target.extend(items)
    elif isinstance(target, PSet):
        target.items.extend(items)
    elif isinstance(target, Opaque):
        target.inner.append(items)
    else:
        raise PickleReadError(f"APPEND to a {type(target).__name__}")


def _set_items(target: Any, pairs: list[tuple[Any, Any]]) -> None:
    if isinstance(target, PDict):
        target.items.extend(pairs)
    elif isinstance(target, Opaque):
        target.inner.append(PDict(pairs))
    else:
        raise PickleReadError(f"SETITEM on a {type(target).__name__}")


MAX_PATH_DEPTH = 64
MAX_PATH_CHARS = 1024
"""A tensor deeper or with a longer path keeps its storage's name (``data/<key>``)."""
MAX_ALSO = 16
"""Places of one tensor object past its first that are kept (a list of one tensor a million
times would otherwise spell a million paths); as many as a tensor's aliases
(:data:`lmgc_core.files.segments.MAX_ALIASES`)."""

_Node = tuple[Any, Any, int] | None
"""A path, kept as a link to its parent's: ``(parent, key, depth)``; ``None`` is the root."""


def _name_tensors(root: Any) -> None:
    """Each tensor's first path from the root (``model/fc1.weight``) and its other places
    (:attr:`TensorRef.also`). A container saved in several places (``{"model": sd, "ema":
    sd}``) is walked from each of them, at most :data:`MAX_ALSO` + 1 times, so its tensors get
    every name while a pickle of nested references costs at most that many times its size, not
    its unfolding. A path is spelled only for a tensor (a 1 MB key above 5,000 items cost 5 GB
    spelled for each, and deep nesting time quadratic in the depth)."""
    walks: dict[int, int] = {}
    todo: list[tuple[Any, _Node]] = [(root, None)]
    while todo:
        obj, node = todo.pop()
        if isinstance(obj, TensorRef):
            if not obj.path:  # the first place, or the first one whose path could be spelled
                obj.path = _spell(node)
            elif len(obj.also) < MAX_ALSO and (path := _spell(node)) and path != obj.path:
                obj.also.append(path)
            continue
        if not isinstance(obj, (PDict, Opaque, list, tuple, PSet)):
            continue
        if walks.get(id(obj), 0) > MAX_ALSO:
            continue
        walks[id(obj)] = walks.get(id(obj), 0) + 1
        depth = node[2] + 1 if node is not None else 1
        if isinstance(obj, PDict):
            children = [(v, (node, k, depth)) for k, v in obj.items]
        elif isinstance(obj, Opaque):  # its arguments and state: under its own path
            children = [(v, node) for v in obj.inner]
        else:
            items = obj.items if isinstance(obj, PSet) else obj
            children = [(v, (node, i, depth)) for i, v in enumerate(items)]
        todo.extend(reversed(children))


def _spell(node: _Node) -> str:
    """The path ``node`` stands for; ``""`` (the storage's name) past the depth or length caps."""
    if node is not None and node[2] > MAX_PATH_DEPTH:
        return ""
    keys, chars = [], 0
    while node is not None:
        node, key, _ = node
        chars += len(key) if isinstance(key, str) else 24
        if chars > MAX_PATH_CHARS:
            return ""
        keys.append(key)
    path = ""
    for key in reversed(keys):
        path = _join(path, key)
    return path


def _join(path: str, key: Any) -> str:
    """``path/key``, with each ``/``- or ``\\``-separated piece of the key made a safe member
    name (``..`` becomes ``_..``, an empty piece ``_``), so conversions accept the path."""
    part = _spelled(key) if isinstance(key, (str, int, float)) or key is None else "?"
    pieces = _SEP.split(part.replace("\0", "_"))
    part = "".join(f"_{p}" if p in ("", ".", "..") else p for p in pieces)
    if not path and _DRIVE.match(part):
        part = f"_{part}"
    return f"{path}/{part}" if path else part


def _spelled(key: str | int | float | None) -> str:
    """``str(key)``, or ``?`` for an int Python will not spell (over 4,300 digits)."""
    try:
        return str(key)
    except ValueError:
        return "?"


_SEP = re.compile(r"([/\\])")
_DRIVE = re.compile(r"[A-Za-z]:")
