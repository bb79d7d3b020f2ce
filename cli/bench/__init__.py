"""`meridian bench`: side-by-side load benchmarks (ceiling, Meridian, a peer)."""
