"""Deterministic simulation of the replication protocol (see world.py and checks.py)."""
