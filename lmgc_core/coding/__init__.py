"""Arrays to streams and back: the pipeline (stages, serializer, prior, coder) and the part coders
it picks once, its configuration (files, option names, the pipeline a stream header records),
the step engine that drives a prior for the encoder and the decoder alike, probabilities, and the
provenance checks that refuse a stream made by other plugins.
"""
