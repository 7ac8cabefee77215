"""`v2c bench ...`: benchmarks that spawn their own broker and measure a
baseline in the same run, so a number is always read beside what the machine
could do at that moment (the machines are shared and noisy).

`common` holds what every bench reuses (broker, percentiles, CPU accounting,
the JSON report); `load` the publisher processes; one module per bench.
"""
