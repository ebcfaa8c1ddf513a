"""Run under mpirun by the tests: for each (checkpoint, output) pair, logits (context pass and through the KV cache)
and greedy tokens, saved by rank 0.

Several checkpoints per launch (same world size) so the tests pay for one mpirun start-up, not one per case.
"""

import sys

import torch

from runtime.reference.runner import ReferenceRunner
from runtime.runners.base import Sampling
from tests.integration.conftest import SEQS

args = sys.argv[1:]
for ckpt, out in zip(args[0::2], args[1::2], strict=True):
    runner = ReferenceRunner.open(ckpt)
    logits = runner.logits(SEQS, through_cache=False)
    cache_logits = runner.logits(SEQS, through_cache=True)  # one token at a time through the (quantized) KV cache
    outs = runner.generate(SEQS, Sampling(max_new_tokens=8))
    if runner.is_leader:
        torch.save({"logits": logits, "cache_logits": cache_logits, "tokens": [o.token_ids for o in outs]}, out)
    else:
        assert logits is None and cache_logits is None and outs == []
