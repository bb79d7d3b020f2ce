"""Meridian: a self-hosted, multi-region key management service with AWS KMS semantics."""

__version__ = "0.1.0"
