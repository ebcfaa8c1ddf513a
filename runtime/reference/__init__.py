"""The reference runtime: a PyTorch executor of the TensorRT-LLM *checkpoint format* (config.json + rank{N}.safetensors).

It computes what TensorRT-LLM is meant to compute from the same files, on CPU (or any torch device), one process per
rank under mpirun, so an export can be checked before spending GPU hours. Each quantization rule cites the
TensorRT-LLM / ModelOpt source it follows (see quant.py).
"""
