"""Run by the kit in a new interpreter: the streams (and score trace) of a job, as JSON.

``python -m lmgc_core.testing._fresh job.json`` prints one JSON line."""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from pathlib import Path

import numpy as np


def main(path: str) -> None:
    from lmgc_core.coding.pipeline import Pipeline
    from lmgc_core.components import registry
    from lmgc_core.testing.trace import score_trace
    from lmgc_core.util.dtypes import parse_dtype

    job = json.loads(Path(path).read_text())
    for module in job.get("runtime_modules", []):
        registry.add_plugin(importlib.import_module(module))
    pipeline = Pipeline.from_config(job["config"])
    out: dict[str, object] = {"streams": {}}
    for name, (file, dtype, shape) in job["arrays"].items():
        arr = np.frombuffer(Path(file).read_bytes(), dtype=parse_dtype(dtype)).reshape(shape)
        out["streams"][name] = hashlib.sha256(pipeline.compress(arr)).hexdigest()
    if "trace" in job:
        data = np.asarray(job["trace"]["data"], dtype=np.float32)
        out["trace"] = score_trace(
            pipeline.prior, pipeline.serializer, data, pipeline.window, pipeline.batch
        )[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
