"""Checkpoints: writing the TensorRT-LLM and unified HF checkpoints (export), slicing an unsharded checkpoint into
tp x pp ranks (reshard), and reading/writing safetensors with numpy alone (_safetensors)."""
