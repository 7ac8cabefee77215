"""`python -m v2c.infra.cli`: the same as the `v2c` command."""

from v2c.infra.cli.main import main

main()
