"""The small tRPC-style runtime: errors, context and metadata, filters, server and services.

Nothing in this package knows about Kafka; the producer and consumer sides plug into it.
"""
