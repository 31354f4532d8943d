"""sa-deploy: deploy Shuffle Attention (SA-Net) models to ONNX, TensorRT and CoreML, and prove them right."""
__version__ = "0.1.0"
