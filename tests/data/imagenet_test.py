"""ImageNet-2012: manual-download check, train and evaluation preprocessing on mock data."""

import numpy as np
import pytest

from kerasbnn import data
from kerasbnn.data import imagenet


def _manual_files(data_dir):
    manual = data_dir / "downloads" / "manual"
    manual.mkdir(parents=True)
    for name in imagenet.MANUAL_FILES:
        (manual / name).write_bytes(b"")


@pytest.mark.parametrize("split", ["train", "validation"])
def test_mock_batches_are_224_crops(mock_tfds, tmp_path, split):
    _manual_files(tmp_path)
    ds = data.load("imagenet2012", split, batch_size=4, seed=0, data_dir=tmp_path, limit=4)
    (x, y), = [(x.numpy(), y.numpy()) for x, y in ds]
    assert x.shape == (4, 224, 224, 3) and x.dtype == np.float32
    assert y.dtype == np.int32 and np.all((y >= 0) & (y < 1000))
    mean, std = np.asarray(imagenet.ImageNet2012.mean), np.asarray(imagenet.ImageNet2012.std)
    assert np.all(x >= -mean / std - 1e-4) and np.all(x <= (1 - mean) / std + 1e-4)


def test_missing_manual_files_say_where_to_put_them(offline, tmp_path):
    with pytest.raises(data.DataNotFoundError) as error:
        data.load("imagenet2012", "validation", data_dir=tmp_path)
    message = str(error.value)
    assert "ILSVRC2012_img_train.tar" in message and "image-net.org" in message
    assert str(tmp_path / "downloads" / "manual") in message


def test_evaluation_resizes_shorter_side_then_center_crops():
    rows, cols = 300, 400
    image = np.zeros((rows, cols, 3), "float32")
    image[:, cols // 2:] = 1.0  # right half white: the center crop is split down the middle
    out = imagenet.IMAGENET2012.evaluate_transform(image).numpy()
    assert out.shape == (224, 224, 3)
    # 300x400 -> 256x341; crop columns 58..282, so the edge sits at column 170 - 58 = 112.
    assert np.all(out[:, :110] == 0.0) and np.all(out[:, 114:] == 1.0)


def test_train_crop_is_224_and_varies_with_seed(rng):
    image = rng.uniform(size=(120, 90, 3)).astype("float32")
    crops = [imagenet.IMAGENET2012.augment(image, np.array([s, 1])).numpy() for s in range(3)]
    assert all(c.shape == (224, 224, 3) for c in crops)
    assert not np.allclose(crops[0], crops[1])
