"""Many simulated vehicles in one process: identities, the simulator, its summary.

`FleetSimulator` (simulator.py) runs N `Vehicle`s on one event loop;
`identity` makes the fleet's VINs and registry entries deterministically;
`summary` counts vehicles by the state and reason they last reported. What
a stack must provide (certificates, the trusted key, the registry) is
provisioned by `v2c.infra.local.fleet_provisioning`: the vehicle knows the
contract and nothing of the cloud's code.
"""
