"""Vehicle onboarding and inventory: what hawkBit's targets and Mender's inventory give users.

A fleet manager registers a vehicle (its VIN, model, region, hardware id,
year, free-form attributes) with a certificate signing request; the cloud
issues the vehicle's client certificate through a `CertificateIssuer` (AWS
IoT Core in a deployment, the stack's CA locally) and keeps the vehicle in
the registry campaigns target. The inventory lists and searches the
registry, shows one vehicle with its active update and certificate, edits
its attributes and decommissions it (certificate revoked, updates
cancelled, left out of every campaign, `device.deleted` on the event bus).

* `csr`, `rules`: pure: CSR checks, field bounds, the registration and
  decommission decisions, search predicates;
* `record`: the registry item as the inventory keeps it;
* `requests`: the API's request bodies, and bulk rows from CSV or JSON;
* `ports`: what the service needs (issuer, updates, sightings, events);
* `repository`, `sightings`: the registry table and fleet index, the telemetry table (I/O);
* `iot_issuer`: the AWS IoT Core issuer; `service`: the use cases;
* `config`: the Lambda-form wiring.
"""
