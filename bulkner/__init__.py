"""bulkner: high-throughput biomedical named entity recognition with LLMs (the LLMNER method)."""
