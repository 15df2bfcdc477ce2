"""Fashion-MNIST: tensorflow-datasets first, then the idx files of a local directory.

Order of the sources, so that a user with internet gets the usual tfds path:
1. a copy prepared by tfds in `data_dir` (or tfds' default directory);
2. a tfds download, tried only if the download host answers within seconds;
3. the four `*-idx?-ubyte.gz` files in `$KERASBNN_DATA_DIR`, by default
   `/usr/share/datasets/fashion-mnist`, where Debian's `dataset-fashion-mnist` installs them.
When none works, `DataNotFoundError` says how to get the data.
"""

import gzip
import os
import zlib

import numpy as np
import tensorflow as tf

from kerasbnn.data.base import (
    DataFormatError,
    DataNotFoundError,
    ImageDataset,
    pad_crop_flip,
    tfds_data_dir,
)
from kerasbnn.data.registry import register_dataset

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_DTYPES = {0x08: np.uint8}
_CHUNK = 1 << 20


class IdxFileError(DataFormatError):
    """An idx file is there but unusable: truncated, corrupt (a gzip checksum that does not
    match), not gzip, not a uint8 idx file, or holding images or labels that are not
    Fashion-MNIST's.

    A `DataFormatError`, so a `DataNotFoundError` (the data cannot be read: the command line
    exits with status 3) and, as before, a `ValueError`.
    """


def local_data_dir():
    """`$KERASBNN_DATA_DIR`, or Debian's `/usr/share/datasets/fashion-mnist`."""
    return os.environ.get("KERASBNN_DATA_DIR") or DEFAULT_DATA_DIR


def read_idx(path, limit=None):
    """Reads an idx file (gzip-compressed or not) into a NumPy array.

    The idx format (LeCun's MNIST page): 2 zero bytes, a dtype byte (0x08 = uint8), the number
    of dimensions, then each dimension as a big-endian int32, then the data in C order. With
    `limit`, only the first `limit` items along the first axis are kept, but the whole file
    is always read: a gzip file's checksum (CRC-32) and length are only checked at its end,
    and a file with fewer or more bytes than its header announces is refused.

    Args:
        path: the `.gz` or raw idx file.
        limit: read at most this many items (None: all).

    Returns:
        The array, shape `(n, *dims)`.

    Raises:
        IdxFileError: (a `ValueError` and a `DataNotFoundError`) if the file is not a uint8 idx
            file, or is truncated or corrupt.
    """
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            header = f.read(4)
            if len(header) != 4 or header[:2] != b"\x00\x00" or header[2] not in _IDX_DTYPES:
                raise IdxFileError(f"{path} is not a uint8 idx file (header {header!r}).")
            ndim = header[3]
            sizes = f.read(4 * ndim)
            if len(sizes) != 4 * ndim:
                raise IdxFileError(f"{path} is truncated: its header ends after {len(sizes)} of "
                                   f"{4 * ndim} size bytes; download it again.")
            dims = [int(d) for d in np.frombuffer(sizes, dtype=">i4")]
            count = dims[0] if limit is None else min(dims[0], limit)
            item = int(np.prod(dims[1:], dtype=np.int64))
            data = np.frombuffer(f.read(count * item), dtype=_IDX_DTYPES[header[2]])
            rest = sum(iter(lambda: len(f.read(_CHUNK)), 0))  # to the end: checks the CRC
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise IdxFileError(
            f"{path} is corrupt or truncated ({type(error).__name__}: {error}); "
            "download it again."
        ) from None
    if data.size != count * item:
        raise IdxFileError(
            f"{path} is truncated: expected {count * item} values, read {data.size}; "
            "download it again."
        )
    if rest != (dims[0] - count) * item:
        raise IdxFileError(
            f"{path} holds {count * item + rest} data bytes, but its header announces "
            f"{dims[0] * item} ({'x'.join(map(str, dims))}): the file is truncated or corrupt; "
            "download it again."
        )
    return data.reshape(count, *dims[1:])


class FashionMNIST(ImageDataset):
    """Fashion-MNIST (Xiao et al. 2017, arXiv:1708.07747): 28x28 grey clothing images.

    Training augmentation: zero-pad 2 pixels, random 28x28 crop, random horizontal flip (the
    CIFAR recipe scaled to 28x28 images; clothes are left-right symmetric). Normalisation with
    the training set's mean 0.2860 and std 0.3530.
    """

    name = "fashion_mnist"
    tfds_name = "fashion_mnist"
    input_shape = (28, 28, 1)
    num_classes = 10
    splits = {"train": 60_000, "test": 10_000}
    mean = (0.2860,)
    std = (0.3530,)
    shuffle_buffer = 60_000
    download_url = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    pad = 2

    def how_to_get(self, data_dir):
        local = local_data_dir()
        return (
            "To get Fashion-MNIST: (a) with internet, let tensorflow-datasets download it "
            f"(python -c \"import tensorflow_datasets as tfds; tfds.builder('fashion_mnist', "
            f"data_dir='{tfds_data_dir(data_dir)}').download_and_prepare()\"); or (b) on Debian/"
            "Ubuntu, `sudo apt-get install dataset-fashion-mnist`, which puts the idx files in "
            f"{DEFAULT_DATA_DIR}; or (c) download train-images-idx3-ubyte.gz, "
            "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz "
            "from https://github.com/zalandoresearch/fashion-mnist into a directory and set "
            f"KERASBNN_DATA_DIR to it (now: {local})."
        )

    def local_examples(self, split, limit=None):
        """Examples read from the idx files in `local_data_dir()`.

        Raises:
            DataNotFoundError: if the files of `split` are not there.
            DataFormatError: if they are truncated or corrupt (`IdxFileError`), of different
                lengths, hold images that are not 28x28 or labels outside 0..9.
            ValueError: for a sliced split such as `"train[:10%]"` (tfds syntax only).
        """
        if split not in IDX_FILES:
            raise ValueError(
                f"The local Fashion-MNIST files only provide the splits 'train' and 'test', "
                f"received {split!r}: use limit= instead of tfds slicing."
            )
        directory = local_data_dir()
        paths = [os.path.join(directory, f) for f in IDX_FILES[split]]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise DataNotFoundError(f"Missing {', '.join(missing)}.")
        images = read_idx(paths[0], limit)
        self.check_image_shape(images.shape[1:], paths[0], expected=self.input_shape[:2])
        labels = read_idx(paths[1], limit)
        self.check_labels(labels, paths[1])
        if len(images) != len(labels):
            raise IdxFileError(
                f"{paths[0]} and {paths[1]} hold {len(images)} and {len(labels)} items."
            )
        self.source = f"the idx files in {directory}"
        images = images[..., np.newaxis]
        return tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64)))

    def examples(self, split, data_dir=None, shuffle_files=False, seed=None, limit=None):
        tfds_split = split if limit is None or "[" in split else f"{split}[:{limit}]"
        try:
            return self.tfds_examples(tfds_split, data_dir, shuffle_files, seed)
        except DataFormatError:  # a tfds copy of something else: say so, no fallback
            raise
        except DataNotFoundError as tfds_error:
            try:
                return self.local_examples(split, limit)
            except DataFormatError as local_error:
                raise IdxFileError(
                    f"Fashion-MNIST's local files in {local_data_dir()} are unusable: "
                    f"{local_error.args[0]} " + self.how_to_get(data_dir)
                ) from None
            except DataNotFoundError as local_error:
                raise DataNotFoundError(
                    f"Fashion-MNIST is not available. tensorflow-datasets: {tfds_error.args[0]} "
                    f"Local files in {local_data_dir()}: {local_error.args[0]} "
                    + self.how_to_get(data_dir)
                ) from None

    def augment(self, image, seed):
        return pad_crop_flip(image, seed, self.pad)


FASHION_MNIST = register_dataset(FashionMNIST())

__all__ = ["FashionMNIST", "FASHION_MNIST", "IdxFileError", "read_idx", "local_data_dir"]
