"""Generation-time additions that vLLM does not give us (``bulkner.kernels``).

``constrain``: constrained decoding, the answer format's grammar over the source sentence lifted
to tokens (CPU reference and the transformers engine's processor); ``vllm_constraint``: the same
as a vLLM V1 logits processor (imports vLLM). A kernel lands here with a CPU reference and a
measured effect.
"""
