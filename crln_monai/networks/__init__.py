"""Networks of CRLN: the backbones, the Dynamic Interaction Module, the rectifier and CRLN itself."""

from .backbone import BackboneOutput
from .crln import CRLN, CRLNOutput, RectifiedPrediction
from .dim import DynamicInteractionModule
from .rectifier import Rectifier
from .unet2d import UNet2D
from .unet3d import UNet3D
from .vnet import VNet

__all__ = ["BackboneOutput", "CRLN", "CRLNOutput", "DynamicInteractionModule", "Rectifier", "RectifiedPrediction", "UNet2D", "UNet3D", "VNet"]
