"""What the language-model priors share without importing torch or llama.cpp: model files,
their hashes, GGUF metadata, token maps, and the priors' common base (model cache and load
counter, options, fingerprint entries, session bookkeeping).
"""
