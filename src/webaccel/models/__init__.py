"""Model registry, import to ONNX, pre/post-processing per task and precision variants."""
