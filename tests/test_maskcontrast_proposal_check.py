"""The proposal file is checked up front: each kind of bad entry is reported with its reason, skipped and
counted when the dataset is built, and the remaining entries train."""
import json
import os.path as osp
import sys

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))
from projects.maskcontrast.maskcontrast import (MaskProposalDataset, check_segmentation,  # noqa: E402
                                                rle_counts)


def rle(mask):
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r['counts'] = r['counts'].decode('ascii')
    return r


def test_rle_counts_agree_with_pycocotools():
    rng = np.random.default_rng(0)
    for t in range(200):
        h, w = (int(v) for v in rng.integers(1, 120, 2))
        mask = [rng.random((h, w)) < rng.random(), np.zeros((h, w), bool), np.ones((h, w), bool)][t % 3]
        runs = rle_counts(rle(mask)['counts'])
        assert runs.sum() == h * w
        decoded = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool).reshape(w, h).T  # column-major runs
        assert (decoded == mask).all()
    # 5 bits per character from '0' (48): 'b' (98) is 50 = 0b110010: more follows; '0' ends the value
    assert rle_counts('3').tolist() == [3] and rle_counts('b0').tolist() == [18]
    for bad in ('b', '\x10', 'é'):
        with pytest.raises(ValueError):
            rle_counts(bad)


def test_check_segmentation_reasons():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    good = rle(mask)
    too_long = rle(np.zeros((10, 13), bool))['counts']
    assert check_segmentation(good, 10, 12) is None
    assert check_segmentation(dict(size=[10, 12], counts=[50, 20, 50]), 10, 12) is None
    assert check_segmentation([[0, 0, 5, 0, 5, 5]], 10, 12) is None
    cases = {
        'differs from the image size': (good, 10, 13),
        'runs cover 130 pixels, the image has 120': (dict(size=[10, 12], counts=too_long), 10, 12),
        'invalid RLE: RLE counts end in the middle': (dict(size=[10, 12], counts='b'), 10, 12),
        'negative run length': (dict(size=[10, 12], counts=[130, -10]), 10, 12),
        'invalid polygons: fewer than 3 points': ([[0, 0, 5, 5]], 10, 12),
        'unsupported segmentation: neither polygons nor RLE': (dict(size=[10, 12]), 10, 12),
    }
    for expected, (seg, h, w) in cases.items():
        assert expected in check_segmentation(seg, h, w), expected


def write_proposals(tmp_path):
    """Five 32 px images with one good proposal each, plus one bad entry of every kind."""
    img_dir = tmp_path / 'imgs'
    img_dir.mkdir()
    images, anns = [], []
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    for i in range(5):
        images.append(dict(id=i + 1, file_name=f'{i}.png', height=32, width=32))
        cv2.imwrite(str(img_dir / f'{i}.png'), np.full((32, 32, 3), 100 + 20 * i, np.uint8))
        anns.append(dict(id=i + 1, image_id=i + 1, segmentation=rle(mask), score=0.9))
    cv2.imwrite(str(img_dir / 'small.png'), np.zeros((16, 32, 3), np.uint8))
    images += [dict(id=6, file_name='missing.png', height=32, width=32),  # no file
               dict(id=7, file_name='small.png', height=32, width=32)]  # the file is 16 x 32
    anns += [dict(id=6, image_id=6, segmentation=rle(mask), score=0.9),  # skipped with its image
             dict(id=7, image_id=7, segmentation=rle(mask), score=0.9),
             dict(id=8, image_id=99, segmentation=rle(mask), score=0.9),  # unknown image
             dict(id=9, image_id=1, score=0.9),  # no segmentation
             dict(id=10, image_id=2, segmentation=dict(size=[32, 32], counts=rle(np.ones((40, 32), bool))['counts'])),
             dict(id=11, image_id=3, segmentation=rle(np.ones((16, 16), bool))),  # another size
             dict(id=12, image_id=4, segmentation=dict(size=[32, 32], counts='b'))]  # truncated
    path = tmp_path / 'proposals.json'
    path.write_text(json.dumps(dict(images=images, annotations=anns)))
    return str(img_dir), str(path)


def test_dataset_checks_the_whole_file_when_built(tmp_path, capsys):
    img_dir, path = write_proposals(tmp_path)
    from mmengine.logging import MMLogger
    MMLogger.get_instance(f'maskcontrast_proposal_check_{tmp_path.name}')  # the current logger, on captured stdout
    ds = MaskProposalDataset(img_dir, path, transform=dict(crop_size=16))
    reasons = {(e['image_id'], e['ann_id']): e['reason'] for e in ds.bad_entries}
    assert len(reasons) == 7
    assert 'image file not found' in reasons[(6, None)]
    assert 'is 16x32, the proposal file says 32x32' in reasons[(7, None)]
    assert reasons[(99, 8)] == 'unknown image id: 99'
    assert reasons[(1, 9)] == 'no segmentation'
    assert 'runs cover 1280 pixels, the image has 1024' in reasons[(2, 10)]
    assert 'RLE size differs from the image size: [16, 16] vs [32, 32]' in reasons[(3, 11)]
    assert 'end in the middle of a value' in reasons[(4, 12)]
    # the good proposals of images 1-5 are used; the bad ones are not drawn later
    assert ds.ids == [1, 2, 3, 4, 5]
    assert all(len(ds.proposals.by_image[i]) == 1 for i in ds.ids)
    for index in range(len(ds)):
        assert ds[index]['data_samples']['proposals'].max() == 1
    text = capsys.readouterr().out
    assert 'checked 7 images and 12 masks; 7 bad entries skipped; 5 images with proposals used' in text
    assert 'skipped 7 bad entries (2 images, 5 masks): 2 x invalid RLE, 1 x image file not found, 1 x image size ' \
        'differs, 1 x unknown image id, 1 x no segmentation, 1 x RLE size differs from the image size' in text
    assert 'annotation 10 of image 2 (1.png): invalid RLE: runs cover 1280 pixels, the image has 1024' in text

    # without a file check (img_dir is given, check_image_size=False): the smaller image passes
    ds = MaskProposalDataset(img_dir, path, check_image_size=False)
    assert len(ds.bad_entries) == 6 and 7 in ds.ids
