"""SA models: reference SA layer, SA-ResNet, SA-MobileNetV2, registry, deploy config and safe checkpoint loading."""
from sa_deploy.models.checkpoint import read_checkpoint
from sa_deploy.models.deploy_config import DeployConfig, deploy_config_of
from sa_deploy.models.preprocessing import PreprocessConfig
from sa_deploy.models.registry import create_model, embedded_models, get_spec, list_models, register_model
from sa_deploy.models.sa_layer import SALayer, channel_shuffle

__all__ = ["SALayer", "channel_shuffle", "create_model", "list_models", "get_spec", "register_model",
           "embedded_models", "read_checkpoint", "PreprocessConfig", "DeployConfig", "deploy_config_of"]
