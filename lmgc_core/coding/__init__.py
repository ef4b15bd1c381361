"""Arrays to streams and back: the pipeline (stages, serializer, prior, coder), its configuration
(files, component specs and their option names), the step engine that drives a prior for the encoder and the decoder
alike, probabilities, and the provenance checks that refuse a stream made by other plugins.
"""
