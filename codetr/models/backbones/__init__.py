"""Backbones: ResNet (torchvision layout), Swin (MMDetection's numerics on timm's parts; timm's own
Swin), EVA-02 ViT (ViTDet layout) over timm's EVA blocks, local-checkpoint loading helpers."""
from .checkpoint_utils import load_local_weights, read_checkpoint
from .resnet import ResNet
from .swin import SwinTransformer
from .timm_swin import TimmSwinTransformer
from .vit import ViT

__all__ = ['ResNet', 'SwinTransformer', 'TimmSwinTransformer', 'ViT', 'load_local_weights',
           'read_checkpoint']
