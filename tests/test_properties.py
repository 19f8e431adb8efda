"""Property-based tests of the loaders (hypothesis): any 16-bit PNG reads back exactly."""
import numpy as np
import torch
from helpers import png16
from hypothesis import given, settings
from hypothesis import strategies as st

from repinterp.app.loading import load_images


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), channels=st.sampled_from([1, 2, 3, 4]),
       filters=st.lists(st.integers(0, 4), min_size=1, max_size=5),
       seed=st.integers(0, 2 ** 32 - 1))
def test_any_16_bit_png_reads_back_exactly(tmp_path_factory, h, w, channels, filters, seed):
    """Whatever its size, channels and the filter of each row, a 16-bit PNG reads back as
    value / 65535 exactly (alpha dropped)."""
    arr = np.random.default_rng(seed).integers(0, 65536, (h, w, channels)).astype(np.uint16)
    path = tmp_path_factory.mktemp("p") / "a.png"
    png16(path, arr, tuple(filters))
    got = load_images(path, normalize="none").images[0]
    colour = arr[..., :3] if channels >= 3 else arr[..., :1]
    assert torch.equal(got, torch.from_numpy(
        colour.transpose(2, 0, 1).astype(np.float32) / np.float32(65535)))
