"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) through tensorflow-datasets.

Training augmentation, as in every seed paper (MAD, CMT-KD, the thesis): zero-pad 4 pixels,
random 32x32 crop, random horizontal flip (He et al. 2016, arXiv:1512.03385 §4.2). Images are
normalised per channel with the training set's mean and standard deviation.
"""

from kerasbnn.data.base import ImageDataset, pad_crop_flip
from kerasbnn.data.registry import register_dataset


class Cifar(ImageDataset):
    """A 32x32x3 CIFAR dataset; subclasses set the name, classes and statistics."""

    input_shape = (32, 32, 3)
    splits = {"train": 50_000, "test": 10_000}
    shuffle_buffer = 50_000
    download_url = "https://www.cs.toronto.edu/~kriz/"
    pad = 4

    def augment(self, image, seed):
        return pad_crop_flip(image, seed, self.pad)


class Cifar10(Cifar):
    """CIFAR-10: 10 classes; mean/std of the 50,000 training images (pixels in [0, 1])."""

    name = tfds_name = "cifar10"
    num_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)


class Cifar100(Cifar):
    """CIFAR-100: 100 fine classes; mean/std of the 50,000 training images."""

    name = tfds_name = "cifar100"
    num_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)


CIFAR10 = register_dataset(Cifar10())
CIFAR100 = register_dataset(Cifar100())

__all__ = ["Cifar", "Cifar10", "Cifar100", "CIFAR10", "CIFAR100"]
