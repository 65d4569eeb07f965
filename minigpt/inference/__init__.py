"""Inference: the KV cache, sampling, and the continuous-batching engine that serves many streams."""
