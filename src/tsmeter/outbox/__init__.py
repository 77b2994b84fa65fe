"""The durable local outbox: batches committed on the recording host, delivered to the store."""
