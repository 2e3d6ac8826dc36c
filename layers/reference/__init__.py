"""Handwritten NumPy layers: the yardstick the generated layers are checked against.

Each layer writes its forward and backward pass out by hand, in the readable
form of the deep-learning course they come from, with the course's faults fixed.
They are slow on purpose; speed is the generated layers' business.
"""

from layers.reference.batch_normalization import BatchNormalization
from layers.reference.channelwise_scaling import ChannelwiseScaling
from layers.reference.conv2d import Conv2d
from layers.reference.dropout import Dropout

__all__ = ["BatchNormalization", "ChannelwiseScaling", "Conv2d", "Dropout"]
