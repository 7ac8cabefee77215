"""The fleet index: every registered vehicle's targeting attributes, compact, in S3.

A campaign over 100,000 vehicles must not page through 100,000 registry
items (a DynamoDB Query or Scan returns at most 1 MB a page). As AWS IoT
fleet indexing does, the attributes campaigns filter on are kept apart in a
form read in a few requests: per model, 16 columnar shards (zstd JSON), plus
an overlay of small delta objects for the changes not yet folded in.

* `codec`: the pure parts: rows, shards, delta keys and bodies, merging;
* `select`: the pure selection of a campaign's targets over the index;
* `store`: the S3 reads and the conditional writes (`FleetIndex`).

The registry table stays the source of truth; the index is derived from it
(`FleetRegistry` writes both) and can be rebuilt from it (`FleetIndex.rebuild`).
"""
