"""merge_pseudo_labels: new labels, plus the earlier ones that no new label overlaps (mask IoU < 0.5);
labels_with_min_score: the confident Free Masks as round 1's labels."""
import numpy as np
import pytest

from freesolo_mmdet.engine.label_merge import labels_with_min_score, merge_pseudo_labels
from freesolo_mmdet.free_mask.coco_writer import mask_to_rle


def box_mask(top, left, bottom, right, shape=(20, 20)):
    mask = np.zeros(shape, bool)
    mask[top:bottom, left:right] = True
    return mask


def labels(images, masks_per_file):
    """A Free Mask-format dict; ``images`` is [(id, file_name)]."""
    annotations = []
    for image_id, file_name in images:
        for mask in masks_per_file.get(file_name, []):
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id, segmentation=mask_to_rle(mask),
                                    score=0.9, emb=[1.0], area=int(mask.sum()), iscrowd=0, category_id=1))
    return dict(images=[dict(id=i, file_name=f, height=20, width=20) for i, f in images],
                annotations=annotations, categories=[dict(id=1, name='object')])


def test_old_labels_are_kept_only_where_no_new_label_overlaps_them():
    square = box_mask(0, 0, 10, 10)  # area 100
    overlapping = box_mask(0, 0, 10, 8)  # IoU 0.8 with square
    touching = box_mask(0, 5, 10, 15)  # IoU 50 / 150 = 0.33 with square
    far = box_mask(12, 12, 20, 20)
    new = labels([(1, 'a.jpg'), (2, 'b.jpg')], {'a.jpg': [square], 'b.jpg': []})
    # the old file lists the images under other ids: matched by file name
    old = labels([(7, 'b.jpg'), (9, 'a.jpg')], {'a.jpg': [overlapping, touching, far], 'b.jpg': [far]})
    merged = merge_pseudo_labels(new, old)
    by_image = {1: [], 2: []}
    for annotation in merged['annotations']:
        by_image[annotation['image_id']].append(annotation)
    assert [a['area'] for a in by_image[1]] == [100, 100, 64]  # square (new), then touching and far (old)
    assert [a['area'] for a in by_image[2]] == [64]  # an image without new labels keeps its old ones
    assert [a['id'] for a in merged['annotations']] == [1, 2, 3, 4]
    assert merged['info']['merged'] == dict(old_labels_kept=3, iou_thr=0.5, unlisted_images='keep')
    assert merged['images'] == new['images']
    # at IoU threshold 0.3 the touching square (0.33) counts as covered too
    assert merge_pseudo_labels(new, old, iou_thr=0.3)['info']['merged']['old_labels_kept'] == 2


def test_images_without_new_labels_keep_their_old_ones():
    """A pseudo-label file lists only the images with a kept mask: an image that it leaves out keeps every
    earlier label (none is covered), under its old id or, where the new file uses that id, one past both files' ids."""
    square, far = box_mask(0, 0, 10, 10), box_mask(12, 12, 20, 20)
    new = labels([(1, 'a.jpg')], {'a.jpg': [square]})
    old = labels([(1, 'b.jpg'), (2, 'a.jpg'), (5, 'c.jpg'), (6, 'd.jpg')],
                 {'a.jpg': [far], 'b.jpg': [square, far], 'c.jpg': [far]})  # d.jpg: no label, not listed
    merged = merge_pseudo_labels(new, old)
    assert [(image['id'], image['file_name']) for image in merged['images']] == [
        (1, 'a.jpg'), (7, 'b.jpg'), (5, 'c.jpg')]
    assert [(a['image_id'], a['area']) for a in merged['annotations']] == [(1, 100), (1, 64), (7, 100), (7, 64),
                                                                           (5, 64)]
    assert [a['id'] for a in merged['annotations']] == [1, 2, 3, 4, 5]
    assert merged['info']['merged']['old_labels_kept'] == 4
    # 'drop': only the images that the new file lists (where the round found an object) stay
    dropped = merge_pseudo_labels(new, old, unlisted_images='drop')
    assert dropped['images'] == new['images']
    assert [(a['image_id'], a['area']) for a in dropped['annotations']] == [(1, 100), (1, 64)]
    assert dropped['info']['merged'] == dict(old_labels_kept=1, iou_thr=0.5, unlisted_images='drop')
    with pytest.raises(ValueError, match="unlisted_images must be 'keep' or 'drop'"):
        merge_pseudo_labels(new, old, unlisted_images='keeep')


def test_labels_with_min_score_keeps_the_scores_at_or_above_it_and_every_image():
    free_masks = labels([(1, 'a.jpg'), (2, 'b.jpg')], {'a.jpg': [box_mask(0, 0, 5, 5), box_mask(8, 8, 12, 12)],
                                                       'b.jpg': [box_mask(0, 0, 3, 3)]})
    for annotation, score in zip(free_masks['annotations'], (0.55, 0.6, 0.7)):
        annotation['score'] = score
    del free_masks['annotations'][2]['score']  # no score: 1.0, as the dataset reads it
    selected = labels_with_min_score(free_masks, 0.6)
    assert [a['id'] for a in selected['annotations']] == [2, 3]  # 0.6 is kept: at least, not above
    assert selected['images'] == free_masks['images'] and selected['info'] == dict(min_score=0.6)
    assert len(free_masks['annotations']) == 3  # the input is left as it was
    assert [a['id'] for a in labels_with_min_score(free_masks, 0.5)['annotations']] == [1, 2, 3]


def test_support_keeps_only_the_old_labels_that_a_less_confident_prediction_overlaps():
    """With ``support`` (the round's less confident predictions) an old label that no new label covers stays
    only where a support mask overlaps it with IoU >= iou_thr; images are matched by file name, and an old
    image left without a label is not listed."""
    square = box_mask(0, 0, 10, 10)  # new label of a.jpg
    left, right = box_mask(12, 0, 20, 8), box_mask(12, 12, 20, 20)  # 64 pixels each, no overlap with square
    new = labels([(1, 'a.jpg')], {'a.jpg': [square]})
    old = labels([(3, 'a.jpg'), (4, 'b.jpg')], {'a.jpg': [box_mask(0, 0, 10, 9), left, right], 'b.jpg': [left]})
    support_masks = {'a.jpg': [box_mask(12, 0, 20, 6),  # IoU 48 / 64 = 0.75 with left
                               box_mask(12, 12, 20, 15)],  # IoU 24 / 64 = 0.375 with right
                     'b.jpg': [box_mask(12, 2, 20, 8)]}  # IoU 0.75 with left
    support = labels([(9, 'b.jpg'), (8, 'a.jpg')], support_masks)
    merged = merge_pseudo_labels(new, old, support=support)
    kept = [(a['image_id'], a['segmentation']) for a in merged['annotations']]
    assert kept == [(1, mask_to_rle(square)), (1, mask_to_rle(left)), (4, mask_to_rle(left))]
    assert merged['info']['merged'] == dict(old_labels_kept=2, iou_thr=0.5, unlisted_images='keep',
                                            old_labels_unsupported=2)  # right, and the covered one
    # an image that the support file does not list keeps no old label, and is not listed without one
    unsupported_b = merge_pseudo_labels(new, old, support=labels([(8, 'a.jpg')], support_masks))
    assert [a['image_id'] for a in unsupported_b['annotations']] == [1, 1]
    assert unsupported_b['images'] == new['images']
    assert merge_pseudo_labels(new, old)['info']['merged']['old_labels_kept'] == 3
