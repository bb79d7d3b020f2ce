"""Meridian's regional node: gRPC API, domain model and SQLite storage."""
