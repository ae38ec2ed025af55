"""tools/split_coco.py: sizes, disjointness, determinism, nesting."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('split_coco', ROOT / 'tools' / 'split_coco.py')
split_tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(split_tool)

N = 1050  # 1% -> round(10.5) = 11, 2% -> 21, 5% -> round(52.5) = 53, 10% -> 105


@pytest.fixture
def ann_file(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.arange(1, 3 * N, 3))[:N].tolist()  # unordered, sparse
    images = [dict(id=i, file_name=f'{i}.jpg', width=64, height=48) for i in ids]
    anns, counts = [], rng.integers(0, 4, size=N)  # 0..3 annotations per image
    for i, c in zip(ids, counts):
        for _ in range(c):
            anns.append(dict(id=len(anns) + 1, image_id=i, category_id=1, bbox=[0, 0, 1, 1],
                             area=1, iscrowd=0))
    coco = dict(images=images, annotations=anns, categories=[dict(id=1, name='x')],
                info=dict(description='t'), licenses=[])
    path = tmp_path / 'instances_train.json'
    path.write_text(json.dumps(coco))
    return path


def read(path):
    coco = json.loads(Path(path).read_text())
    return coco, [img['id'] for img in coco['images']]


def test_sizes_disjoint_and_annotations_follow(ann_file, tmp_path):
    out = tmp_path / 'out'
    written = split_tool.main([str(ann_file), '--out-dir', str(out), '--unlabeled',
                               '--percents', '1', '2', '5', '10', '0.5'])
    assert len(written) == 10
    full, all_ids = read(ann_file)
    anns_per_img = {}
    for a in full['annotations']:
        anns_per_img.setdefault(a['image_id'], []).append(a)
    for pct, size in [('1', 11), ('2', 21), ('5', 53), ('10', 105), ('0.5', 5)]:
        lab, lab_ids = read(out / f'instances_train.1@{pct}.json')
        unl, unl_ids = read(out / f'instances_train.1@{pct}-unlabeled.json')
        assert len(lab_ids) == len(set(lab_ids)) == size  # without replacement
        assert set(lab_ids).isdisjoint(unl_ids)
        assert sorted(lab_ids + unl_ids) == sorted(all_ids)
        for part, ids in ((lab, lab_ids), (unl, unl_ids)):
            assert part['annotations'] == [a for a in full['annotations'] if a['image_id'] in ids]
            assert part['categories'] == full['categories'] and part['info'] == full['info']
        assert len(lab['annotations']) == sum(len(anns_per_img.get(i, [])) for i in lab_ids)
        assert len(lab['annotations']) + len(unl['annotations']) == len(full['annotations'])


def test_deterministic_nested_and_varied(ann_file):
    full, ids = read(ann_file)
    pcts = [1, 2, 5, 10]
    a = split_tool.labeled_image_ids(ids, pcts, seed=0, fold=1)
    assert a == split_tool.labeled_image_ids(ids[::-1], pcts, seed=0, fold=1)  # order-free
    for small, big in zip(pcts, pcts[1:]):
        assert set(a[small]) < set(a[big])  # nested within a fold
    b = split_tool.labeled_image_ids(ids, pcts, seed=0, fold=2)
    c = split_tool.labeled_image_ids(ids, pcts, seed=1, fold=1)
    for other in (b, c):
        assert len(set(a[10]) & set(other[10])) < 30  # ~10.5 expected by chance
    assert set(a[10]) <= set(ids)


def test_folds_and_file_names(ann_file, tmp_path):
    written = split_tool.main([str(ann_file), '--out-dir', str(tmp_path), '--folds', '3',
                               '--percents', '5', '--prefix', 'p', '--seed', '7'])
    assert [Path(p).name for p in written] == ['p.1@5.json', 'p.2@5.json', 'p.3@5.json']
    ids = [read(p)[1] for p in written]
    assert ids[0] != ids[1] != ids[2]
    again = split_tool.main([str(ann_file), '--out-dir', str(tmp_path / 'again'),
                             '--folds', '3', '--percents', '5', '--prefix', 'p', '--seed', '7'])
    assert [read(p)[1] for p in again] == ids


def test_bad_inputs(ann_file, tmp_path):
    _, ids = read(ann_file)
    with pytest.raises(ValueError, match='at least one image'):
        split_tool.labeled_image_ids(ids, [0.01])
    with pytest.raises(ValueError, match='at least one image'):
        split_tool.labeled_image_ids(ids, [150])
    with pytest.raises(ValueError, match='duplicate image ids'):
        split_tool.labeled_image_ids([1, 2, 2], [50])
    with pytest.raises(FileNotFoundError):
        split_tool.main([str(tmp_path / 'none.json'), '--out-dir', str(tmp_path)])
    (tmp_path / 'bad.json').write_text('{"images": [')
    with pytest.raises(ValueError, match='not valid JSON'):
        split_tool.main([str(tmp_path / 'bad.json'), '--out-dir', str(tmp_path)])
