"""OTA cloud side: firmware registry, signing, campaigns, status tracking, the fleet-manager API."""
