"""Backbones: ResNet (torchvision layout) and local-checkpoint loading helpers."""
from .checkpoint_utils import load_local_weights, read_checkpoint
from .resnet import ResNet

__all__ = ['ResNet', 'load_local_weights', 'read_checkpoint']
