"""The `v2c` command line: one module per command group under `commands/`,
the HTTP client for the API, exit codes, and the demo's view. The top of the
infra wings: nothing below imports it.
"""
