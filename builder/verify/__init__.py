"""Verification: a checkpoint's logits on the reference runtime against the fake-quant, source and unsplit models
(checkpoint), and the accuracy gate (gate: perplexity and smoke prompts, whose checks are in evaluate)."""
