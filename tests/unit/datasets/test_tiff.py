"""TIFFs that Pillow cannot open or clips (float, 16-bit, many samples, multi-page, volumes):
load_rgb reads the first page and scales it to 8 bits. Files are written with tifffile."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from sparse_cbm.datasets import load_dataset
from sparse_cbm.datasets.imagefolder import load_rgb, to_uint8
from sparse_cbm.errors import CorruptImageError
from tests.conftest import make_imagefolder

H, W = 30, 40


def gradient(dtype, lo=0.0, hi=1.0) -> np.ndarray:
    return np.linspace(lo, hi, H * W).reshape(H, W).astype(dtype)


def pillow_opens(path) -> bool:
    try:
        with Image.open(path) as img:
            img.load()
        return True
    except OSError:
        return False


def rgb(path) -> np.ndarray:
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == (W, H)
    return np.asarray(img)


def grey(path) -> np.ndarray:
    arr = rgb(path)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all()
    return arr[..., 0]


# ---- to_uint8 ----------------------------------------------------------------------------

def test_to_uint8_scales_min_max_over_finite_values():
    out = to_uint8(np.array([[-2.0, 0.0], [np.nan, 2.0], [np.inf, -np.inf]]))
    assert out.dtype == np.uint8 and out.shape == (3, 2)
    assert out.tolist() == [[0, 128], [0, 255], [0, 0]]


def test_to_uint8_integer_types_bool_and_uint8():
    assert to_uint8(np.array([100, 300, 1100], dtype=np.uint16)).tolist() == [0, 51, 255]
    assert to_uint8(np.array([-5, 5], dtype=np.int32)).tolist() == [0, 255]
    assert to_uint8(np.array([True, False])).tolist() == [255, 0]
    u8 = np.array([3, 7, 200], dtype=np.uint8)
    assert to_uint8(u8) is u8


def test_to_uint8_constant_and_empty_of_finite_values_are_zero():
    assert not to_uint8(np.full((4, 4), 7.5)).any()
    assert not to_uint8(np.full((4, 4), 60000, dtype=np.uint16)).any()
    assert not to_uint8(np.array([np.nan, np.inf])).any()


def test_to_uint8_refuses_complex():
    with pytest.raises(ValueError, match="complex"):
        to_uint8(np.zeros(3, dtype=np.complex64))


# ---- files -------------------------------------------------------------------------------

def test_float32_in_unit_range_is_scaled_not_black(tmp_path):
    path = tmp_path / "f32.tif"
    tifffile.imwrite(path, gradient(np.float32))
    assert pillow_opens(path)  # as mode "F": convert("RGB") alone would make it black
    g = grey(path)
    assert g.min() == 0 and g.max() == 255
    assert (np.diff(g.astype(int).ravel()) >= 0).all()


def test_float64_that_pillow_cannot_open_is_read(tmp_path):
    path = tmp_path / "f64.tif"
    data = gradient(np.float64, -3.0, 5.0)
    tifffile.imwrite(path, data)
    assert not pillow_opens(path)
    assert (grey(path) == to_uint8(data)).all()


def test_same_pixels_whichever_library_opens_the_file(tmp_path):
    data = gradient(np.float32, 10.0, 20.0) ** 2
    tifffile.imwrite(tmp_path / "f32.tif", data)  # Pillow opens it
    tifffile.imwrite(tmp_path / "f64.tif", data.astype(np.float64))  # only tifffile does
    assert (rgb(tmp_path / "f32.tif") == rgb(tmp_path / "f64.tif")).all()


def test_tiff_found_by_magic_bytes_without_extension(tmp_path):
    path = tmp_path / "scan.img"
    with open(path, "wb") as f:
        tifffile.imwrite(f, gradient(np.float64))
    assert grey(path).max() == 255


@pytest.mark.parametrize("dtype", [np.uint16, np.float64])  # opened by Pillow, by tifffile
def test_multi_page_uses_only_the_first_page(tmp_path, dtype):
    path = tmp_path / "pages.tif"
    first = gradient(np.float64, 0, 1000)
    pages = [first, first[::-1, ::-1], np.full((H, W), 5000.0)]
    for i, page in enumerate(pages):
        tifffile.imwrite(path, page.astype(dtype), append=i > 0)
    assert len(tifffile.TiffFile(path).pages) == 3
    g = grey(path)
    assert (g == to_uint8(first.astype(dtype))).all()
    assert not (g == to_uint8(pages[1].astype(dtype))).all()


def test_planar_five_channel_uint16_takes_the_first_three(tmp_path):
    path = tmp_path / "planar.tif"
    levels = [0, 400, 2000, 60000, 60000]  # the last two would change the scaling if kept
    data = np.stack([np.full((H, W), v, dtype=np.uint16) for v in levels])
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig="separate")
    assert tifffile.TiffFile(path).pages[0].shape == (5, H, W)
    arr = rgb(path)
    assert arr[0, 0].tolist() == [0, 51, 255] and (arr == arr[0, 0]).all()


def test_planar_three_channel_float_is_rgb(tmp_path):
    path = tmp_path / "planar_rgb.tif"
    data = np.stack([np.full((H, W), v, dtype=np.float32) for v in (1.0, 0.0, 0.5)])
    tifffile.imwrite(path, data, photometric="rgb", planarconfig="separate")
    assert (rgb(path) == [255, 0, 128]).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])  # opened by Pillow, by tifffile
def test_two_channels_take_the_first_as_grey(tmp_path, dtype):
    path = tmp_path / "two.tif"
    first = gradient(np.float64, 0, 200)
    data = np.stack([first, np.full((H, W), 250.0)], axis=-1).astype(dtype)
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig="contig")
    expected = first.astype(dtype) if dtype == np.uint8 else to_uint8(first)
    assert (grey(path) == expected).all()


def test_volume_takes_the_first_slice(tmp_path):
    path = tmp_path / "volume.tif"
    data = np.stack([gradient(np.float32), gradient(np.float32)[::-1], np.zeros((H, W), np.float32)])
    tifffile.imwrite(path, data, volumetric=True, tile=(1, 16, 16), photometric="minisblack")
    assert tifffile.TiffFile(path).pages[0].axes == "ZYX"  # Pillow opens it, but decodes it as black
    assert (grey(path) == to_uint8(data[0])).all()


def test_nan_pixels_become_black_and_the_rest_spans_the_range(tmp_path):
    path = tmp_path / "nan.tif"
    data = gradient(np.float32, 2.0, 3.0)
    data[5, 5], data[6, 6], data[7, 7] = np.nan, np.inf, -np.inf
    tifffile.imwrite(path, data)
    g = grey(path)
    assert g[5, 5] == g[6, 6] == g[7, 7] == 0
    assert g[-1, -1] == 255 and g[1, 0] > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
def test_constant_image_is_black(tmp_path, dtype):
    path = tmp_path / "constant.tif"
    tifffile.imwrite(path, np.full((H, W), 42, dtype=dtype))
    assert not grey(path).any()


def test_truncated_and_fake_tiffs_name_the_file_with_both_reasons(tmp_path):
    tifffile.imwrite(tmp_path / "f64.tif", gradient(np.float64))
    tifffile.imwrite(tmp_path / "zip.tif", gradient(np.float32), compression="zlib")
    cases = []
    for name in ("f64", "zip"):  # Pillow cannot open one; it opens the other but cannot decode it
        data = (tmp_path / f"{name}.tif").read_bytes()
        cut = tmp_path / f"{name}_truncated.tif"
        cut.write_bytes(data[: len(data) // 2])
        cases.append(cut)
    fake = tmp_path / "fake.tif"
    fake.write_text("<html>not an image</html>")
    magic_only = tmp_path / "magic.tif"
    magic_only.write_bytes(b"II*\0garbage")
    cases += [fake, magic_only]
    for path in cases:
        with pytest.raises(CorruptImageError) as err:
            load_rgb(path)
        msg = str(err.value)
        assert err.value.path == str(path) and str(path) in msg and "skip_corrupt" in msg
        assert "Pillow: " in err.value.reason and "; tifffile: " in err.value.reason
        assert "\n" not in msg


def test_tiff_page_over_the_pixel_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, gradient(np.float64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", H * W - 1)
    with pytest.raises(CorruptImageError, match="MAX_IMAGE_PIXELS") as err:
        load_rgb(path)
    assert err.value.path == str(path)


def test_imagefolder_lists_and_loads_tiffs(tmp_path):
    root = make_imagefolder(tmp_path / "data", classes=("cat", "dog"), n_train=2, n_test=1)
    tifffile.imwrite(root / "test" / "dog" / "scan.TIF", gradient(np.float64, -1.0, 1.0))
    tifffile.imwrite(root / "test" / "cat" / "stack.tiff", np.stack([gradient(np.uint16, 0, 9)] * 2))
    d = load_dataset("imagefolder", str(root), seed=0, val_fraction=0.0)
    test = d.splits["test"]
    for image_id, label, expected in (("test/dog/scan.TIF", 1, to_uint8(gradient(np.float64))),
                                      ("test/cat/stack.tiff", 0, to_uint8(gradient(np.uint16, 0, 9)))):
        i = test.ids.index(image_id)
        assert test.labels[i] == label
        img = test.load(i)
        assert img.mode == "RGB" and img.size == (W, H)
        assert (np.asarray(img)[..., 0] == expected).all()
