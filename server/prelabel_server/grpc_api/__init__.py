"""The gRPC front of the engine: converters, servicer, error interceptor, server assembly."""
