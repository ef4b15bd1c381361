"""Files as users have them (npy, npz, safetensors, torch.save, raw bytes, model folders) and
the archive lmgc writes: every source file as segments, read chunk by chunk, coded through the
``coding`` layer, and rebuilt byte for byte.
"""
