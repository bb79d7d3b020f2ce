"""The domain: keys, key versions, states, crypto recipes. No grpc, no sqlite here."""
