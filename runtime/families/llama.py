"""Llama and the families TensorRT-LLM runs as Llama: Mistral, and Qwen2 (Llama with a qkv bias).

TensorRT-LLM 1.2.x: tensorrt_llm/models/__init__.py MODEL_MAP maps LlamaForCausalLM/MistralForCausalLM to
LLaMAForCausalLM and Qwen2ForCausalLM to QWenForCausalLM; tensorrt_llm/models/llama/convert.py and qwen/convert.py
name the fused modules: q/k/v -> attention.qkv, o -> attention.dense, gate_proj -> mlp.fc, up_proj -> mlp.gate,
down_proj -> mlp.proj (GatedMLP computes act(fc(x)) * gate(x)). ModelOpt's export calls the decoders "llama" and
"qwen" and writes the HF architecture name into the checkpoint.
"""

from __future__ import annotations

from runtime.families import COLUMN, ROW, Family

LINEARS = {
    "q_proj": ("attention.qkv", COLUMN),
    "k_proj": ("attention.qkv", COLUMN),
    "v_proj": ("attention.qkv", COLUMN),
    "o_proj": ("attention.dense", ROW),
    "gate_proj": ("mlp.fc", COLUMN),
    "up_proj": ("mlp.gate", COLUMN),
    "down_proj": ("mlp.proj", ROW),
}

LLAMA = Family(
    "llama",
    hf_architectures=("LlamaForCausalLM",),
    trtllm_architectures=("LlamaForCausalLM",),
    modelopt_decoder="llama",
    linears=LINEARS,
)
MISTRAL = Family(
    "mistral",
    hf_architectures=("MistralForCausalLM",),
    trtllm_architectures=("MistralForCausalLM",),
    modelopt_decoder="llama",
    linears=LINEARS,
)
QWEN2 = Family(
    "qwen2",
    hf_architectures=("Qwen2ForCausalLM",),
    trtllm_architectures=("Qwen2ForCausalLM", "QWenForCausalLM"),
    modelopt_decoder="qwen",
    linears=LINEARS,
    qkv_bias=True,
)
