"""list_images over a folder: every file listed once (links followed, loops cut), in a fixed order, and
ImagePipelineDataset reading or reporting each."""
import os

import cv2
import numpy as np
import pytest

from freesolo_mmdet.datasets.image_list import ImagePipelineDataset, list_images

PIPELINE = [dict(type='LoadAnyImageFromFile', backend_args=None),
            dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape'))]


def write_image(path, value: int = 0, size=(6, 8)) -> None:
    """A PNG of one grey ``value``, whatever the name of ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode('.png', np.full((*size, 3), value, np.uint8))[1].tobytes())


def file_names(images_dir) -> list:
    return [image['file_name'] for image in list_images(str(images_dir))]


def test_every_file_is_listed_whatever_its_name(tmp_path):
    for name in ['b.png', 'a.jfif', 'sub/c.gif', 'NOEXT', 'notes.txt', '.hidden.png', '.cache/d.png', 'z.JPG']:
        write_image(tmp_path / name) if name != 'notes.txt' else (tmp_path / name).write_text('hello')
    images = list_images(str(tmp_path))
    assert [image['file_name'] for image in images] == [
        '.cache/d.png', '.hidden.png', 'NOEXT', 'a.jfif', 'b.png', 'notes.txt', 'sub/c.gif', 'z.JPG']
    assert [image['id'] for image in images] == list(range(1, 9))
    assert images[6]['path'] == os.path.join(str(tmp_path), 'sub/c.gif')
    assert list_images(str(tmp_path)) == images  # deterministic


def test_dataset_reads_images_and_reports_other_files(tmp_path):
    write_image(tmp_path / 'a.png', 50)
    (tmp_path / 'notes.txt').write_text('not an image')
    dataset = ImagePipelineDataset(list_images(str(tmp_path)), PIPELINE)
    items = [dataset[i] for i in range(len(dataset))]
    assert len(items) == 2
    assert items[0]['error'] is None and items[0]['data']['inputs'].shape == (3, 6, 8)
    assert int(items[0]['data']['inputs'].max()) == 50
    assert items[1]['data'] is None
    assert items[1]['error'].startswith('OSError: cannot read image ') and 'notes.txt: cannot identify image' in \
        items[1]['error']


def test_symlink_loop_lists_each_image_once(tmp_path):
    images = tmp_path / 'images'
    write_image(images / 'a.png')
    write_image(images / 'sub' / 'b.png')
    os.symlink('.', images / 'loop')
    os.symlink('..', images / 'sub' / 'up')
    assert file_names(images) == ['a.png', 'sub/b.png']


def test_two_links_to_one_folder_list_it_once(tmp_path):
    shared = tmp_path / 'shared'
    write_image(shared / 'x.png')
    images = tmp_path / 'images'
    write_image(images / 'own.png')
    os.symlink(shared, images / 'link_b')
    os.symlink(shared, images / 'link_a')
    os.symlink(images / 'link_b', images / 'zz')  # a link to a link
    assert file_names(images) == ['link_a/x.png', 'own.png']  # under the path that sorts first


def test_folder_order_follows_path_order(tmp_path):
    """'a-b/' sorts before 'a/' (as the file names are sorted): a folder linked from both is listed
    under 'a-b'."""
    images = tmp_path / 'images'
    write_image(images / 'a' / 'real' / 'x.png')
    (images / 'a-b').mkdir()
    os.symlink(images / 'a' / 'real', images / 'a-b' / 'real')
    assert file_names(images) == ['a-b/real/x.png']


def test_links_to_files_and_dead_links_are_listed(tmp_path):
    write_image(tmp_path / 'a.png')
    os.symlink(tmp_path / 'a.png', tmp_path / 'b.png')
    os.symlink(tmp_path / 'missing.png', tmp_path / 'dead.png')
    os.mkfifo(tmp_path / 'pipe')
    assert file_names(tmp_path) == ['a.png', 'b.png', 'dead.png']
    dataset = ImagePipelineDataset(list_images(str(tmp_path)), PIPELINE)
    assert dataset[1]['error'] is None and dataset[2]['error'].startswith('FileNotFoundError')


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / 'empty' / 'sub').mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r'^--images: no file in .*empty \(searched recursively\)$'):
        list_images(str(tmp_path / 'empty'))
    with pytest.raises(FileNotFoundError, match='no such folder'):
        list_images(str(tmp_path / 'missing'))


def test_unreadable_folder_raises(tmp_path, monkeypatch):
    write_image(tmp_path / 'a.png')
    write_image(tmp_path / 'locked' / 'b.png')
    scandir = os.scandir

    def locked_scandir(path):
        if os.path.basename(path) == 'locked':
            raise PermissionError(13, 'Permission denied', path)
        return scandir(path)

    monkeypatch.setattr(os, 'scandir', locked_scandir)  # os.walk lists folders with os.scandir
    with pytest.raises(OSError, match=r'^--images: cannot list folder .*locked: Permission denied$'):
        list_images(str(tmp_path))
