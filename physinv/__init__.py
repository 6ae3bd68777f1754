"""physinv: recover what a scene is made of by differentiating through the physics that produced it."""

from physinv.errors import PhysinvError

__all__ = ["PhysinvError"]
__version__ = "0.1.0"
