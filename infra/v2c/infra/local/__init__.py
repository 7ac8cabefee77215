"""The local cloud on one machine: mosquitto, the moto server, the API on
loopback, the processes of `v2c stack up`, and the wiring that hands handlers
their environment. Built on `v2c.infra.settings`; may use `aws` (the stack
provisions what the template provisions) and `pki`.
"""
