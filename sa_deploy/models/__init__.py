"""SA models: reference SA layer, SA-ResNet, SA-MobileNetV2, registry and safe checkpoint loading."""
from .checkpoint import read_checkpoint
from .preprocessing import PreprocessConfig
from .registry import create_model, embedded_models, get_spec, list_models, register_model
from .sa_layer import SALayer, channel_shuffle

__all__ = ["SALayer", "channel_shuffle", "create_model", "list_models", "get_spec", "register_model",
           "embedded_models", "read_checkpoint", "PreprocessConfig"]
