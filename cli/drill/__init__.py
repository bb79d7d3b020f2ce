"""`meridian drill`: region-outage drills against a running local cluster (cli/drill/DESIGN.md)."""
