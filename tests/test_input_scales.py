"""Input scales from the images: the factor, and every resize of both demo configs scaled by it."""
import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from freesolo_mmdet.apis.input_scales import (input_scale_factor, median_short_side, resize_short_side,
                                              scale_configs, scale_pipeline)
from test_maskcontrast_smoke import REPO

FREE_MASK = f'{REPO}/configs/demo/free_mask_demo.py'
TRAIN = f'{REPO}/configs/demo/freesolo_light_demo.py'


def test_median_short_side_reads_headers_and_skips_unreadable_files(tmp_path):
    images = []
    for i, (w, h) in enumerate([(640, 480), (300, 500), (1000, 200), (448, 448)]):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / f'{i}.png')
        images.append(dict(path=str(tmp_path / f'{i}.png')))
    (tmp_path / 'bad.png').write_bytes(b'not an image')
    images.append(dict(path=str(tmp_path / 'bad.png')))
    assert median_short_side(images) == 374  # short sides 480, 300, 200, 448: median (300 + 448) / 2
    assert median_short_side(images, max_samples=2) == 340  # every other image: 480 and 200
    assert median_short_side([dict(path=str(tmp_path / 'bad.png'))]) is None


@pytest.mark.parametrize('image_side, factor', [(None, 1.0), (200, 1.0), (320, 1.0), (448, 1.4), (900, 2.0)])
def test_factor_raises_the_config_toward_the_images_never_below_it(image_side, factor):
    assert input_scale_factor(image_side, 320, max_factor=2.0) == pytest.approx(factor)


def test_every_resize_of_the_demo_configs_scales():
    free_mask, train = Config.fromfile(FREE_MASK), Config.fromfile(TRAIN)
    assert resize_short_side(train.test_dataloader.dataset.pipeline) == 320
    assert resize_short_side(free_mask.test_pipeline) == 544
    fm, tr = scale_configs([free_mask, train], 1.4)
    assert fm.test_pipeline[1].scale == (1866, 762)
    assert tr.train_dataloader.dataset.pipeline[2].scales == [(717, 358), (717, 403), (717, 448)]
    assert tr.test_dataloader.dataset.pipeline[1].scale == (717, 448)
    assert tr.test_pipeline[1].scale == (717, 448)
    assert free_mask.test_pipeline[1].scale == (1333, 544)  # the inputs are left as they were
    same, = scale_configs([train], 1.0)
    assert same.to_dict() == train.to_dict()


def test_wrapped_and_nested_resizes_scale():
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='RandomResize', scale=[(100, 50), (200, 100)], keep_ratio=True),
                dict(type='RandomApply', transforms=[dict(type='Resize', scale=(40, 20))]),
                dict(type='Resize', scale_factor=0.5)]
    scaled = scale_pipeline(pipeline, 2.0)
    assert scaled[1]['scale'] == [(200, 100), (400, 200)]
    assert scaled[2]['transforms'][0]['scale'] == (80, 40)
    assert scaled[3] == dict(type='Resize', scale_factor=0.5)
    assert resize_short_side(pipeline) == 100


def test_the_pipeline_scales_both_configs_from_the_folder_and_says_so(tmp_path, capsys):
    from freesolo_mmdet.apis.pipeline import choose_input_scales
    images = []
    for i, (w, h) in enumerate([(640, 480), (720, 480), (480, 640)]):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / f'{i}.jpg')
        images.append(dict(path=str(tmp_path / f'{i}.jpg')))
    fm, train = choose_input_scales(Config.fromfile(FREE_MASK), Config.fromfile(TRAIN), images, max_factor=2.0)
    assert resize_short_side(fm.test_pipeline) == 816  # 544 * 480 / 320
    assert resize_short_side(train.test_dataloader.dataset.pipeline) == 480
    assert train.train_dataloader.dataset.pipeline[2].scales == [(768, 384), (768, 432), (768, 480)]
    assert 'x1.50' in capsys.readouterr().out
    fm, _ = choose_input_scales(Config.fromfile(FREE_MASK), Config.fromfile(TRAIN), images, max_factor=1.25)
    assert resize_short_side(fm.test_pipeline) == 680


def test_an_unknown_input_scale_mode_is_refused_before_any_work(tmp_path):
    from freesolo_mmdet.apis.config import InputError
    from freesolo_mmdet.apis.pipeline import run_pipeline
    with pytest.raises(InputError, match="--input-scale must be 'auto' or 'config'"):
        run_pipeline(str(tmp_path), str(tmp_path / 'w'), FREE_MASK, TRAIN, input_scale='native')
    assert not (tmp_path / 'w').exists()
