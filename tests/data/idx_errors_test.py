"""read_idx on damaged files: one IdxFileError (a DataNotFoundError and a ValueError) naming
the file and the fix, never EOFError or zlib.error."""

import gzip

import numpy as np
import pytest

from kerasbnn.data import DataNotFoundError, fashion_mnist


def _idx_bytes(count=20):
    pixels = np.random.default_rng(0).integers(0, 256, count * 784, dtype=np.uint8).tobytes()
    return b"\x00\x00\x08\x03" + np.array([count, 28, 28], ">i4").tobytes() + pixels


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: p.write_bytes(gzip.compress(_idx_bytes())[:-200]), "is corrupt or truncated"),
        (lambda p: p.write_bytes(gzip.compress(_idx_bytes()[:1000])), "is truncated: expected"),
        (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x03\x00\x00")), "header ends after"),
        (lambda p: p.write_bytes(b"plain bytes, not gzip"), "is corrupt or truncated"),
    ],
)
def test_damaged_idx_files_raise_idx_file_error(tmp_path, write, message):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write(path)
    with pytest.raises(fashion_mnist.IdxFileError, match=message) as info:
        fashion_mnist.read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, DataNotFoundError) and isinstance(info.value, ValueError)
