"""Runners: the reference (PyTorch, CPU/GPU), TensorRT engines (ModelRunnerCpp), and the PyTorch backend (LLM API)."""
