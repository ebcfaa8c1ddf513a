"""Run under mpirun by the tests: logits + greedy tokens of a checkpoint, saved by rank 0."""

import sys

import torch

from runtime.reference.runner import ReferenceRunner
from runtime.runners.base import Sampling
from tests.integration.conftest import SEQS

runner = ReferenceRunner.open(sys.argv[1])
logits = runner.logits(SEQS)
outs = runner.generate(SEQS, Sampling(max_new_tokens=8))
if runner.is_leader:
    torch.save({"logits": logits, "tokens": [o.token_ids for o in outs]}, sys.argv[2])
else:
    assert logits is None and outs == []
