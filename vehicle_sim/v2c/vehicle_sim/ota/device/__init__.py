"""The vehicle's device side: everything the agent's effects turn into I/O.

`runtime` executes the agent's effects on asyncio; `download` (+ `partial`,
`chunking`, `progress`) fetches packages over HTTP Range requests;
`flash`, `flash_port`, `installer`, `package` and `session` model the A/B
flash and the installation; `faults` and `fault_proxy` inject the FMEA's
failures; `sim_time`, `clock` and `vehicle_model` give the fleet its
simulated time and driving conditions. Nothing is imported here, so each
module can be used without the others.
"""
