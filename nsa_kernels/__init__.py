"""nsa-workbook kernels: SGLang's NSA draft-extend metadata fill, from Python to one launch.

Import order matters: ``_env`` switches Triton to its interpreter on machines without a GPU
before any kernel below is decorated.
"""
from ._env import DEVICE, INTERPRET  # noqa: F401  (must come first)
from .reference import pipeline_reference, reference
from .stages import STAGES, Stage
from .stages.stage5_zero_sync import ZeroSyncFill, launch_zero_sync
from .stages.stage6_full_pipeline import FullPipelineFill, PipelineBuffers, launch_full_pipeline
from .empty_kernel import launch_empty

__all__ = ["DEVICE", "FullPipelineFill", "INTERPRET", "ZeroSyncFill",
           "PipelineBuffers", "STAGES", "Stage", "launch_empty", "launch_full_pipeline",
           "launch_zero_sync", "pipeline_reference", "reference"]
