"""trtq builder: turns a recipe into a TensorRT-LLM artifact (resolve -> quantize -> export -> build -> verify)."""

__version__ = "0.3.0"
