"""Dead-letter queues: the record every failed message becomes, the stores
that keep records (S3 for telemetry, SQS for OTA), and the inspect/replay service."""
