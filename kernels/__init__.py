"""GPU-side additions that vLLM does not give us (``bulkner.kernels``).

Empty on purpose: a kernel lands here only with a CPU reference implementation and a measured gain
over vLLM's built-in option (for copy-heavy LLMNER answers that is n-gram speculation, already
available as ``--speculative-ngram``).
"""
