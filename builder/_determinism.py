"""Deterministic torch settings for calibration: the same recipe on the same machine gives the same files.

On the CPU, calibration is already deterministic (seeded data picks, fixed op order). On CUDA, some kernels pick
algorithms by timing or accumulate with atomics; these settings ask for the deterministic ones. `warn_only` keeps an
op without a deterministic kernel working (with a warning) instead of failing a long build.
"""

from __future__ import annotations

import os


def deterministic_torch(torch, seed: int) -> None:
    """Seed every generator and prefer deterministic kernels. Call before the first CUDA matmul."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for reproducible GEMMs
    torch.manual_seed(seed)  # also seeds every CUDA device
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
