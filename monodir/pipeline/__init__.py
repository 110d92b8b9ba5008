"""Orchestration: Dask graph over the kernels, cluster construction, progress."""
