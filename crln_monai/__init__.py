"""crln-monai: CRLN semi-supervised 3D segmentation on MONAI and Ignite."""

__version__ = "0.1.0"
