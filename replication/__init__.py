"""Multi-region replication: the log, shipping and applying (sans-IO core + transports)."""
