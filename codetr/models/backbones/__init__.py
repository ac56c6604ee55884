"""Backbones: ResNet (torchvision layout), Swin (MMDetection's numerics on timm's parts; timm's own
Swin), local-checkpoint loading helpers."""
from .checkpoint_utils import load_local_weights, read_checkpoint
from .resnet import ResNet
from .swin import SwinTransformer
from .timm_swin import TimmSwinTransformer

__all__ = ['ResNet', 'SwinTransformer', 'TimmSwinTransformer', 'load_local_weights',
           'read_checkpoint']
