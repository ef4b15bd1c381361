"""Leaf helpers every layer may use: the error family, dtypes and byte views, the thread pool,
signals, progress bars. They import nothing else from lmgc, so nothing below them can form a cycle.
"""
