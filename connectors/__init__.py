"""Readers of input shards into Document, Tombstone and Reject records (``bulkner.connectors``)."""
