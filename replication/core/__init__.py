"""The sans-IO protocol core: pure decisions about what to send, what to apply, epochs and
merges. Nothing here awaits, reads a clock, draws randomness or touches storage; the node's
engine (``replication/engine.py``) and the deterministic simulation (``replication/sim``)
drive the same functions."""
