"""Backbones: ResNet (torchvision layout), Swin over timm, EVA-02 ViT (ViTDet layout) over
timm's EVA blocks, local-checkpoint loading helpers."""
from .checkpoint_utils import load_local_weights, read_checkpoint
from .resnet import ResNet
from .timm_swin import TimmSwinTransformer
from .vit import ViT

__all__ = ['ResNet', 'TimmSwinTransformer', 'ViT', 'load_local_weights', 'read_checkpoint']
