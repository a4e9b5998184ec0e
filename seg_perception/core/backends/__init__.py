"""Inference backends. Each module imports its runtime (onnxruntime, torch, tensorrt) itself,
so that choosing one never loads the others."""
