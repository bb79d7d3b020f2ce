"""Crypto recipes: the only modules that import ``cryptography.hazmat``."""
