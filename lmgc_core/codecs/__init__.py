"""lmgc inside other storage libraries: the numcodecs codec (Zarr v2), the Zarr v3 codec and the
Dask helpers that write Zarr stores in parallel.
"""
