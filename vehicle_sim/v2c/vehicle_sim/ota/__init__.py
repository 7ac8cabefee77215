"""The vehicle's OTA update agent (issue #7) and the ports around it.

Pure core: `vehicle_state` (what the vehicle reports about itself), `checks`
(accept / reject / defer, in the spec's order), `effects` (what the agent asks
its runtime to do, and what the ports report back), `agent` (the state
machine's public API; `machine`, `core`, `memory`, `reports` hold its parts).
The downloader, the A/B flash model, the installer and the MQTT runtime are
the ports around it. Nothing is imported here, so each module can be used
without the others.
"""
