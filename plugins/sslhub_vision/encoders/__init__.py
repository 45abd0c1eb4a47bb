"""Image encoders: any timm model, and a small built-in CNN."""

from sslhub_vision.encoders.normalize import Normalize
from sslhub_vision.encoders.small_cnn import SmallCNN, SmallCNNParams
from sslhub_vision.encoders.timm_encoder import TimmEncoder, TimmParams

__all__ = ["Normalize", "SmallCNN", "SmallCNNParams", "TimmEncoder", "TimmParams"]
