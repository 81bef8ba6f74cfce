"""The model zoo. Importing this package registers every family."""

from relucut.models import hybrenet, mobilenet, resnet, resnet_cifar, vgg, wrn  # noqa: F401  (registration)
from relucut.models.registry import ModelSpec, create_model, list_models, register_model

__all__ = ["ModelSpec", "create_model", "list_models", "register_model"]
