"""Emulated wide-area links for a local cluster: a fault-injecting TCP proxy.

`shape` names links and describes their condition, `shaping` decides (without I/O) when
each chunk of a stream may arrive, `proxy` forwards TCP connections under those
decisions, `control` is the proxy's small run-time API, `geography` the default
distances between regions. cli/netem/DESIGN.md explains the model.
"""
