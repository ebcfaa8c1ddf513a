"""GPT-2: LayerNorm with bias, learned absolute positions, biased linears, MLP fc -> gelu (tanh) -> proj.

TensorRT-LLM 1.2.x: MODEL_MAP maps GPT2LMHeadModel/GPTForCausalLM to GPTForCausalLM (tensorrt_llm/models/gpt/);
its Conv1D layers attn.c_attn (fused qkv), attn.c_proj, mlp.c_fc, mlp.c_proj. ModelOpt's export calls the decoder
"gpt" and marks it rope_gpt_neox (its default), although GPT-2 has a learned position table that TensorRT-LLM would
then ignore: trtq writes learned_absolute.
"""

from __future__ import annotations

from runtime.families import COLUMN, ROW, Family

GPT2 = Family(
    "gpt2",
    hf_architectures=("GPT2LMHeadModel",),
    trtllm_architectures=("GPT2LMHeadModel", "GPTForCausalLM"),
    modelopt_decoder="gpt",
    linears={
        "attn.c_attn": ("attention.qkv", COLUMN),
        "attn.c_proj": ("attention.dense", ROW),
        "mlp.c_fc": ("mlp.fc", COLUMN),
        "mlp.c_proj": ("mlp.proj", ROW),
    },
    norm="layer",
    positions="learned",
    gated_mlp=False,
    all_biases=True,
    trtllm_config={"position_embedding_type": "learned_absolute"},
)
