"""read_image / LoadAnyImageFromFile: one Pillow decoder for every format, in mmdet's BGR uint8."""
import os.path as osp
import shutil

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from freesolo_mmdet.datasets.transforms import LoadAnyImageFromFile, read_image
from freesolo_mmdet.datasets.transforms.load_any_image import ALPHA_BACKGROUND
from mmdet.registry import TRANSFORMS

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
BACKGROUND = np.array(ALPHA_BACKGROUND, np.float64)  # RGB


@pytest.fixture
def rgb():
    """(30, 40, 3) uint8 random RGB image."""
    return np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)


def test_16bit_tiff_is_scaled_by_its_maximum(tmp_path):
    ramp = np.arange(0, 1001, dtype=np.uint16).reshape(7, 143)
    Image.fromarray(ramp).save(tmp_path / 'ramp.tif')
    assert Image.open(tmp_path / 'ramp.tif').mode == 'I;16'
    assert cv2.imread(str(tmp_path / 'ramp.tif')).max() == 3  # OpenCV: >> 8, all but black
    img = read_image(str(tmp_path / 'ramp.tif'))
    assert img.shape == (7, 143, 3) and img.dtype == np.uint8 and img.flags.c_contiguous
    expected = np.rint(ramp / 1000 * 255).astype(np.uint8)
    for c in range(3):
        assert np.array_equal(img[..., c], expected)
    assert img.max() == 255 and img[0, 100, 0] == 26 and img[3, 71, 0] == 128  # 100 -> 25.5, 500 -> 127.5
    Image.fromarray(np.zeros((4, 5), np.uint16)).save(tmp_path / 'zero.tif')
    assert np.array_equal(read_image(str(tmp_path / 'zero.tif')), np.zeros((4, 5, 3), np.uint8))


def test_16bit_png_big_endian_and_float(tmp_path):
    Image.fromarray(np.array([[0, 2048, 4095]], np.uint16)).save(tmp_path / 'twelve_bit.png')  # 12-bit data
    assert read_image(str(tmp_path / 'twelve_bit.png'))[0, :, 0].tolist() == [0, 128, 255]
    big = Image.frombytes('I;16B', (3, 1), np.array([0, 500, 1000], '>u2').tobytes())
    big.save(tmp_path / 'big.tif')
    assert read_image(str(tmp_path / 'big.tif'))[0, :, 1].tolist() == [0, 128, 255]
    Image.fromarray(np.array([[-1., 0.5, 1., 2.]], np.float32)).save(tmp_path / 'float.tif')
    assert read_image(str(tmp_path / 'float.tif'))[0, :, 2].tolist() == [0, 64, 128, 255]  # negative -> 0


def test_8bit_png_matches_opencv(tmp_path, rgb):
    cv2.imwrite(str(tmp_path / 'a.png'), rgb)
    img = read_image(str(tmp_path / 'a.png'))
    assert np.array_equal(img, cv2.imread(str(tmp_path / 'a.png'))) and np.array_equal(img, rgb)
    Image.fromarray(rgb).save(tmp_path / 'b.png')  # written as RGB by Pillow: read back as BGR
    assert np.array_equal(read_image(str(tmp_path / 'b.png')), rgb[..., ::-1])


def test_grayscale_gives_three_equal_channels(tmp_path, rgb):
    gray = rgb[..., 0]
    Image.fromarray(gray).save(tmp_path / 'g.png')
    img = read_image(str(tmp_path / 'g.png'))
    assert img.shape == (30, 40, 3)
    assert all(np.array_equal(img[..., c], gray) for c in range(3))


def test_palette_and_transparent_palette_colour(tmp_path):
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255]  # red, green, blue
    index = np.array([[0, 1, 2, 1]], np.uint8)
    img = Image.fromarray(index, 'P')
    img.putpalette(palette)
    img.save(tmp_path / 'p.png')
    assert read_image(str(tmp_path / 'p.png'))[0].tolist() == [[0, 0, 255], [0, 255, 0], [255, 0, 0], [0, 255, 0]]
    img.save(tmp_path / 'pt.png', transparency=2)  # blue is transparent: the background (BGR)
    assert read_image(str(tmp_path / 'pt.png'))[0, 2].tolist() == [104, 117, 124]


def test_alpha_is_composited_over_the_background(tmp_path, rgb):
    alpha = np.array([[0, 255], [128, 64]], np.uint8)
    colour = rgb[:2, :2]
    Image.fromarray(np.dstack([colour, alpha]), 'RGBA').save(tmp_path / 'rgba.png')
    a = alpha[..., None] / 255.
    expected = np.rint(colour * a + BACKGROUND * (1 - a)).astype(np.uint8)[..., ::-1]
    img = read_image(str(tmp_path / 'rgba.png'))
    assert np.array_equal(img, expected)
    assert img[0, 0].tolist() == [104, 117, 124] and np.array_equal(img[0, 1], colour[0, 1, ::-1])
    Image.fromarray(np.dstack([np.full((2, 2), 200, np.uint8), alpha]), 'LA').save(tmp_path / 'la.png')
    assert read_image(str(tmp_path / 'la.png'))[1, 0].tolist() == [152, 159, 162]  # 200 * a + bg * (1 - a)


def test_exif_orientation_is_applied(tmp_path):
    stripe = np.zeros((20, 40, 3), np.uint8)
    stripe[:, :10] = 255  # white on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(stripe).save(tmp_path / 'exif.jpg', exif=exif, quality=95)
    img = read_image(str(tmp_path / 'exif.jpg'))
    assert img.shape == (40, 20, 3)
    assert img[:8].min() > 230 and img[12:].max() < 25  # the left stripe is now on top


def test_gif_first_frame_jfif_and_no_extension(tmp_path, rgb):
    frames = [Image.new('P', (5, 4), i) for i in range(3)]
    for frame in frames:
        frame.putpalette([10, 20, 30, 200, 100, 50, 0, 255, 0])
    frames[0].save(tmp_path / 'anim.gif', save_all=True, append_images=frames[1:])
    assert Image.open(tmp_path / 'anim.gif').n_frames == 3
    img = read_image(str(tmp_path / 'anim.gif'))
    assert img.shape == (4, 5, 3) and (img == [30, 20, 10]).all()
    cv2.imwrite(str(tmp_path / 'a.jpg'), rgb)
    shutil.copy(tmp_path / 'a.jpg', tmp_path / 'a.jfif')
    shutil.copy(tmp_path / 'a.jpg', tmp_path / 'no_extension')
    reference = read_image(str(tmp_path / 'a.jpg'))
    assert np.abs(reference.astype(int) - cv2.imread(str(tmp_path / 'a.jpg'))).max() <= 1  # same libjpeg or close
    assert np.array_equal(read_image(str(tmp_path / 'a.jfif')), reference)
    assert np.array_equal(read_image(str(tmp_path / 'no_extension')), reference)


def test_unreadable_files_name_the_file_and_the_reason(tmp_path, rgb):
    (tmp_path / 'notes.txt').write_text('not an image')
    with pytest.raises(OSError, match=r'notes\.txt: cannot identify image'):
        read_image(str(tmp_path / 'notes.txt'))
    cv2.imwrite(str(tmp_path / 'a.jpg'), np.tile(rgb, (8, 8, 1)))
    data = (tmp_path / 'a.jpg').read_bytes()
    (tmp_path / 'cut.jpg').write_bytes(data[:len(data) // 2])
    with pytest.raises(OSError, match=r'cut\.jpg: truncated or corrupt image data \(image file is truncated'):
        read_image(str(tmp_path / 'cut.jpg'))
    with pytest.raises(FileNotFoundError, match='missing.png'):
        read_image(str(tmp_path / 'missing.png'))


def test_transform_matches_read_image(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / 'a.png')
    path = str(tmp_path / 'a.png')
    transform = TRANSFORMS.build(dict(type='LoadAnyImageFromFile', backend_args=None))
    assert isinstance(transform, LoadAnyImageFromFile)
    results = transform(dict(img_path=path))
    assert np.array_equal(results['img'], read_image(path)) and results['img'].dtype == np.uint8
    assert results['img_shape'] == results['ori_shape'] == (30, 40) and results['img_path'] == path
    results = LoadAnyImageFromFile(to_float32=True)(dict(img_path=path))
    assert results['img'].dtype == np.float32 and np.array_equal(results['img'], read_image(path))
    (tmp_path / 'bad.png').write_text('x')
    assert LoadAnyImageFromFile(ignore_empty=True)(dict(img_path=str(tmp_path / 'bad.png'))) is None
    with pytest.raises(OSError, match='bad.png'):
        transform(dict(img_path=str(tmp_path / 'bad.png')))
    assert repr(transform) == 'LoadAnyImageFromFile(ignore_empty=False, to_float32=False, backend_args=None)'


@pytest.mark.parametrize('config', ['configs/free_mask/free_mask_r50_densecl.py', 'configs/demo/free_mask_demo.py',
                                    'configs/demo/freesolo_light_demo.py'])
def test_configs_load_with_pillow(config):
    cfg = Config.fromfile(osp.join(REPO, config))
    pipelines = [cfg.test_pipeline] + ([cfg.train_pipeline] if 'train_pipeline' in cfg else [])
    for pipeline in pipelines:
        assert pipeline[0] == dict(type='LoadAnyImageFromFile', backend_args=None)
        assert isinstance(TRANSFORMS.build(pipeline[0]), LoadAnyImageFromFile)
