import gzip

import numpy as np
import pytest

from repinterp.core.errors import UserError
from repinterp.demo.data import load_fashion_mnist, read_idx


def test_missing_and_empty_data_dirs_name_both_options(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_fashion_mnist("train", tmp_path / "nope")
    with pytest.raises(UserError, match="dataset-fashion-mnist.*--data DIR"):
        load_fashion_mnist("train", tmp_path)
    with pytest.raises(UserError, match="split must be"):
        load_fashion_mnist("validation", tmp_path)


def test_reads_gzipped_idx_folder(tmp_path):
    imgs = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    labels = np.array([3, 7], dtype=np.uint8)
    for stem, arr in [("train-images-idx3-ubyte", imgs), ("train-labels-idx1-ubyte", labels),
                      ("t10k-images-idx3-ubyte", imgs), ("t10k-labels-idx1-ubyte", labels)]:
        header = bytes([0, 0, 8, arr.ndim]) + np.array(arr.shape, ">u4").tobytes()
        with gzip.open(tmp_path / f"{stem}.gz", "wb") as f:
            f.write(header + arr.tobytes())
    x, y = load_fashion_mnist("test", tmp_path, normalize=False)
    assert x.shape == (2, 1, 28, 28) and y.tolist() == [3, 7]
    assert float(x[0, 0, 0, 1]) == pytest.approx(1 / 255)
    np.testing.assert_array_equal(read_idx(tmp_path / "train-labels-idx1-ubyte.gz"), labels)
    (tmp_path / "bad.gz").write_bytes(b"xx")
    with pytest.raises(UserError, match="not a readable IDX file"):
        read_idx(tmp_path / "bad.gz")
