"""Serving an artifact over HTTP: `trtq serve`.

- On a GPU inside NVIDIA's TensorRT-LLM 1.2.1 container: `trtllm-serve` with the options the artifact needs
  (runtime/serve/trtllm.py).
- Elsewhere: the same OpenAI-compatible API from the CPU reference runtime (runtime/serve/app.py), with continuous
  batching over per-sequence KV-cache rows (runtime/serve/engine.py, scheduler.py). Split checkpoints serve under
  mpirun: rank 0 answers HTTP and broadcasts each step's work, every rank computes its shard.
- `trtq export-triton`: a Triton model repository for the engines (runtime/serve/triton.py).
"""
