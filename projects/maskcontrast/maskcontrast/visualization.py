"""mmengine visualiser of semantic segmentations: image | ground truth | prediction, one colour per class."""
from typing import List, Optional, Sequence

import cv2
import mmcv
import numpy as np
from mmdet.registry import VISUALIZERS
from mmdet.structures import DetDataSample
from mmengine.dist import master_only
from mmengine.visualization import Visualizer

__all__ = ['class_palette', 'SemSegLocalVisualizer']

TITLE_HEIGHT = 22


def class_palette(num_classes: int) -> np.ndarray:
    """(num_classes + 1, 3) uint8 RGB: class 0 (background) dark grey, then distinct hues; the
    last row (index -1) is black, for pixels of no class (unmatched clusters)."""
    colors = [(60, 60, 60)]
    for i in range(1, num_classes):
        hue = int(180 * (i - 1) / max(num_classes - 1, 1))  # OpenCV hue in [0, 180)
        hsv = np.uint8([[[hue, 200, 255]]])
        colors.append(tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]))
    colors.append((0, 0, 0))
    return np.array(colors, np.uint8)


@VISUALIZERS.register_module()
class SemSegLocalVisualizer(Visualizer):
    """Draws a :class:`DetDataSample`'s ``gt_sem_seg`` and ``pred_sem_seg`` (``sem_seg``: (1, H, W) class
    indices, -1 = no class) blended over the image, side by side with the image, titles above and a
    legend of the classes (``dataset_meta['classes']``) below, as mmdet's ``DetLocalVisualizer`` draws
    detections.

    Args:
        name (str): Instance name.
        alpha (float): Opacity of the class colours.
        vis_backends (list[dict], optional): Where :meth:`add_datasample` stores images without ``out_file``.
        save_dir (str, optional): Folder of the backends.
    """

    def __init__(self, name: str = 'visualizer', alpha: float = 0.6, vis_backends: Optional[List[dict]] = None,
                 save_dir: Optional[str] = None, **kwargs) -> None:
        super().__init__(name=name, vis_backends=vis_backends, save_dir=save_dir, **kwargs)
        self.alpha = alpha

    def draw_sem_seg(self, image: np.ndarray, sem_seg: np.ndarray, palette: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB with each class of the (H, W) map blended in its colour (``draw_binary_masks``)."""
        self.set_image(image)
        classes = [c for c in np.unique(sem_seg)]
        if classes:
            masks = np.stack([sem_seg == c for c in classes])
            colors = [tuple(int(v) for v in palette[c]) for c in classes]  # -1: the last row, black
            self.draw_binary_masks(masks, colors=colors, alphas=self.alpha)
        return self.get_image()

    def _titled(self, image: np.ndarray, title: str) -> np.ndarray:
        bar = np.full((TITLE_HEIGHT, image.shape[1], 3), 255, np.uint8)
        cv2.putText(bar, title, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        return np.concatenate([bar, image], axis=0)

    def _legend(self, width: int, classes: Sequence[str], palette: np.ndarray) -> np.ndarray:
        legend = np.full((TITLE_HEIGHT, width, 3), 255, np.uint8)
        x = 4
        for i, name in enumerate(classes):
            cv2.rectangle(legend, (x, 5), (x + 12, 17), tuple(int(c) for c in palette[i]), -1)
            cv2.putText(legend, name, (x + 16, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
            x += 24 + 9 * len(name)
        return legend

    @master_only
    def add_datasample(self,
                       name: str,
                       image: np.ndarray,
                       data_sample: Optional[DetDataSample] = None,
                       draw_gt: bool = True,
                       draw_pred: bool = True,
                       show: bool = False,
                       wait_time: float = 0,
                       out_file: Optional[str] = None,
                       pred_title: str = 'prediction',
                       step: int = 0) -> np.ndarray:
        """Draw one sample: image | ground truth | prediction (the parts present), titled, with a legend.

        Args:
            name (str): Image name (for the backends).
            image (ndarray): (H, W, 3) uint8 RGB.
            data_sample (DetDataSample): ``gt_sem_seg`` / ``pred_sem_seg`` with ``sem_seg`` (1, H, W).
            out_file (str, optional): Write the picture here instead of to the backends.
            pred_title (str): Title of the prediction.

        Returns:
            ndarray: the (H', W', 3) uint8 RGB picture.
        """
        classes = list((self.dataset_meta or {}).get('classes', []))
        palette = class_palette(max(len(classes), 1))
        tiles = [self._titled(image, 'image')]
        parts = [('gt_sem_seg', 'ground truth', draw_gt), ('pred_sem_seg', pred_title, draw_pred)]
        for field, title, wanted in parts:
            if wanted and data_sample is not None and field in data_sample:
                sem_seg = np.asarray(getattr(data_sample, field).sem_seg)[0].astype(np.int64)
                tiles.append(self._titled(self.draw_sem_seg(image, sem_seg, palette), title))
        row = np.concatenate(tiles, axis=1)
        drawn = np.concatenate([row, self._legend(row.shape[1], classes, palette)], axis=0)
        if show:
            self.show(drawn, win_name=name, wait_time=wait_time)
        if out_file is not None:
            mmcv.imwrite(drawn[..., ::-1], out_file)
        else:
            self.add_image(name, drawn, step)
        return drawn
