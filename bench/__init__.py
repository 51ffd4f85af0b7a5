"""Benchmark of the signed firmware update (issue 3): the agent against the disk's floor, the
peers' curl | openssl | dd pipeline, and the bytes refetched after a cut. Not a test: run it as
`make bench` (or `python -m bench --help`); results go to bench/results/<date>.json."""
