"""Backbones: ResNet (torchvision layout), Swin over timm, local-checkpoint loading helpers."""
from .checkpoint_utils import load_local_weights, read_checkpoint
from .resnet import ResNet
from .timm_swin import TimmSwinTransformer

__all__ = ['ResNet', 'TimmSwinTransformer', 'load_local_weights', 'read_checkpoint']
