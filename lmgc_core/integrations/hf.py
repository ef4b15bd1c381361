"""transformers loads model folders written by ``lmgc compress MODEL_DIR -o OUT_DIR``.

After :func:`enable`, ``from_pretrained(OUT_DIR)`` finds ``model.safetensors.lmgc`` where it
looks for ``model.safetensors``, and the shards an index JSON names (``model-0000N-of-0000M
.safetensors``) as their ``.lmgc`` archives; their tensors are decoded straight into torch
tensors (:class:`lmgc_core.safetensors.safe_open`), no temporary file. Plain folders load as
before.

Two names in ``transformers.modeling_utils`` are wrapped: ``safe_open`` (which every safetensors
load goes through, but for ``disable_mmap=True``, where transformers reads the file with
``open()``: a path that does not exist but whose ``.lmgc`` does opens the archive) and
``_get_resolved_checkpoint_files`` (the local-folder lookup, for an unsharded
``model.safetensors.lmgc``). :func:`enable` checks they exist and says which is missing when a
transformers version lacks them. ``transformers.integrations.accelerate.safe_open`` (used with a
``device_map``) is wrapped too when present.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
from typing import Any

from lmgc_core.files.archive import SUFFIX
from lmgc_core.util.errors import PluginError

_PATCHES = (
    ("transformers.modeling_utils", "safe_open"),
    ("transformers.modeling_utils", "_get_resolved_checkpoint_files"),
)
_OPTIONAL = (("transformers.integrations.accelerate", "safe_open"),)
_MARK = "__lmgc_wrapped__"
_saved: list[tuple[Any, str, Any]] = []


def lmgc_path(path: str | os.PathLike) -> str | None:
    """The archive that stands for ``path`` (``path + '.lmgc'``) when ``path`` itself is not
    there."""
    path = os.fspath(path)
    if not os.path.exists(path) and os.path.isfile(path + SUFFIX):
        return path + SUFFIX
    return None


def _wrap_safe_open(original: Any) -> Any:
    @functools.wraps(original)
    def safe_open(filename: Any, framework: str = "pt", device: Any = "cpu", **kw: Any) -> Any:
        archive = lmgc_path(filename) if isinstance(filename, str | os.PathLike) else None
        if archive is None:
            return original(filename, framework=framework, device=device, **kw)
        from lmgc_core.safetensors import safe_open as lmgc_safe_open

        return lmgc_safe_open(archive, framework=framework, device=str(device))

    setattr(safe_open, _MARK, original)
    return safe_open


def _wrap_resolve(original: Any, weights_name: str, index_name: str) -> Any:
    signature = inspect.signature(original)
    missing = {"pretrained_model_name_or_path", "variant", "gguf_file", "use_safetensors"}
    missing -= set(signature.parameters)
    if missing:
        raise PluginError(
            "lmgc_core.integrations.hf cannot hook this transformers: "
            f"_get_resolved_checkpoint_files takes no {', '.join(sorted(missing))}"
        )

    @functools.wraps(original)
    def resolve(*args: Any, **kw: Any) -> Any:
        bound = signature.bind(*args, **kw)
        given = bound.arguments
        path = given.get("pretrained_model_name_or_path")
        if (
            path is not None
            and given.get("gguf_file") is None
            and given.get("use_safetensors") is not False
            and given.get("transformers_explicit_filename") is None
            and os.path.isdir(str(path))
        ):
            download = given.get("download_kwargs") or {}
            folder = os.path.join(str(path), download.get("subfolder", "") or "")
            variant = given.get("variant")  # save_pretrained(variant="fp16")
            plain = os.path.join(folder, _with_variant(weights_name, variant))
            index = os.path.join(folder, _with_variant(index_name, variant))
            if not os.path.exists(index) and lmgc_path(plain):
                return [plain], None
        return original(*args, **kw)

    setattr(resolve, _MARK, original)
    return resolve


def _with_variant(name: str, variant: Any) -> str:
    """``model.safetensors`` as transformers names it for ``variant`` (``model.fp16.safetensors``;
    the index ``model.safetensors.index.fp16.json``)."""
    if not isinstance(variant, str) or not variant:
        return name
    stem, suffix = name.rsplit(".", 1)
    return f"{stem}.{variant}.{suffix}"


def _lookup(module_name: str, attr: str) -> Any:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"lmgc_core.integrations.hf needs transformers ({exc})") from None
    if not hasattr(module, attr):
        import transformers

        raise PluginError(
            "lmgc_core.integrations.hf cannot hook this transformers "
            f"({transformers.__version__}): "
            f"{module_name}.{attr} is gone; decompress the folder with `lmgc decompress` instead"
        )
    return module


def enable() -> None:
    """Let ``from_pretrained`` read lmgc-compressed model folders (idempotent)."""
    modules = [_lookup(m, a) for m, a in _PATCHES]
    mu = modules[0]
    if getattr(mu.safe_open, _MARK, None) is not None:
        return
    names = (getattr(mu, "SAFE_WEIGHTS_NAME", None), getattr(mu, "SAFE_WEIGHTS_INDEX_NAME", None))
    if not all(isinstance(n, str) for n in names):
        raise PluginError("lmgc_core.integrations.hf: transformers names no SAFE_WEIGHTS_NAME here")
    targets = [(mu, "safe_open", _wrap_safe_open(mu.safe_open))]
    resolve = mu._get_resolved_checkpoint_files
    targets.append((mu, "_get_resolved_checkpoint_files", _wrap_resolve(resolve, *names)))
    for module_name, attr in _OPTIONAL:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, attr):
            targets.append((module, attr, _wrap_safe_open(getattr(module, attr))))
    for module, attr, value in targets:
        _saved.append((module, attr, getattr(module, attr)))
        setattr(module, attr, value)


def disable() -> None:
    """Undo :func:`enable`."""
    while _saved:
        module, attr, value = _saved.pop()
        setattr(module, attr, value)
