"""Hooks into other libraries' loaders (transformers' ``from_pretrained``), built on ``files``."""
