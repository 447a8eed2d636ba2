"""bulkner: high-throughput biomedical named entity recognition with LLMs (the LLMNER method)."""

from bulkner.outputs.tables import finished_files, read_table

__all__ = ["finished_files", "read_table"]
