"""The cloud side of vehicle telemetry (spec 001): validation, dedup, enrichment
and the writes to the operational store (DynamoDB) and a time-series sink.

Pure domain in `model`, `validation` and `dedup`; adapters over boto3 in
`store`, `registry`, `timeseries` and `firehose_sink`; the orchestration in `service`; the
environment-based wiring of the Lambda form in `config`. The Lambda entry
points are `v2c.handlers.telemetry_ingest` and `v2c.handlers.telemetry_batch`.
"""
