"""Mamba building blocks shared by the Mamba baselines (RS3Mamba; MambaBCD).

``baselines.mamba.selective_scan`` is the module; its ``selective_scan(...)`` dispatcher runs
mamba_ssm's fused CUDA kernel where that imports and the tensors are on CUDA, else the
pure-PyTorch reference ``selective_scan_ref``. Set the module flag
``baselines.mamba.selective_scan.FORCE_REFERENCE = True`` to force the reference. (The package
does not re-export the dispatcher, so that name keeps meaning the module.)
"""

from baselines.mamba.selective_scan import cross_merge, cross_scan, fused_available, selective_scan_ref, uses_fused

__all__ = ["cross_merge", "cross_scan", "fused_available", "selective_scan_ref", "uses_fused"]
