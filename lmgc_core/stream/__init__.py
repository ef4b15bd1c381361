"""One lmgc stream as bytes: the container (magic, header, blocks, checksums) and the notes a
codec keeps beside the pipeline in its header. Knows no pipeline and no file format.
"""
