"""The OTA domain as pure logic: no boto3, no MQTT, no clock, no randomness.

Every function here is a function of its arguments (a seed where a choice must
look random, `now` where time matters), so the handlers and repositories decide
what to persist and when, and the rules are tested without any I/O:

* `semver`: semantic versions (campaign version format, installed_version filters);
* `target_filter` (+ `filter_lexer`): the safe target-filter grammar
  (`model='Accord' AND year>=2023`);
* `campaign_rules` (+ `maintenance_window`, `validation`): `CampaignSpec`, creation
  input validated per BR-OTA-011..020, pydantic errors turned into `ValidationFailed`;
* `canary`: stratified canary selection and the canary gate;
* `counters`: campaign counters and the rates of BR-OTA-041;
* `update_state`: the per-vehicle update state machine fed by `OTAStatus` reports;
* `report_batch`: a batch of those reports folded per update in sequence order,
  and its writes cut into transactions;
* `rollout`: staged waves, blue/green cohorts, batch sizing;
* `plan`: the rollout plan, every target in dispatch order cut into waves;
* `lifecycle`: campaign statuses and which command may move a campaign where;
* `campaign_health`: failure threshold, auto-pause / auto-rollback, stalled campaigns;
* `rollback_rules`: a rollback's trigger (BR-OTA-031) and the versions a vehicle ran (BR-OTA-032);
* `campaign_run`: what running a campaign does with all of the above (who is
  eligible, the end of a wave, what a cancel moves, the reaction to outcomes,
  stall detection), as decisions the campaign service carries out.
"""
