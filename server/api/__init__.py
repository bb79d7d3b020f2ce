"""gRPC adapters: servicers (proto <-> domain), interceptors, the error table."""
