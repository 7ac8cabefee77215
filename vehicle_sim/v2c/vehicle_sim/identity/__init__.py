"""The vehicle's identity: its client certificate and key, and their rotation (`renewal`)."""
