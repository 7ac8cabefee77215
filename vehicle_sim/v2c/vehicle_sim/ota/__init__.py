"""The vehicle's OTA update agent (issue #7): a pure core and the device around it.

`agent/` decides (no I/O: values in, effects out); `device/` executes
(downloader, A/B flash, bootloader port, the asyncio runtime). The
dependency runs one way: `device` imports `agent`, never the reverse.
"""
