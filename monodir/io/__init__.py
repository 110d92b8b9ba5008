"""Storage layer: MRC input/output with validation, and the Zarr run store."""
