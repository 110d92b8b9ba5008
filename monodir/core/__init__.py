"""Pure numerical kernels: numpy arrays in, numpy arrays out. No Dask, no files, no globals."""
