"""Many simulated vehicles in one process: identities, certificates, the simulator.

`FleetSimulator` (simulator.py) runs N `VehicleRuntime`s on one event loop
against a stack; `identity` makes the fleet's VINs and registry entries
deterministically; `certs` issues (and caches) each vehicle's client
certificate; `summary` counts vehicles by the state and reason they last
reported.
"""
