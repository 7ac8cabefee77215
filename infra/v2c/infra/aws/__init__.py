"""What v2c provisions in an AWS account (or a moto server): resource specs,
the idempotent converge step, and the SAM template rendered from the same
description. Knows nothing of the local stack or the CLI.
"""
