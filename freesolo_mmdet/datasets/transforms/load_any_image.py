# Copyright (c) freesolo_mmdet contributors.
"""One image reader for the pipelines of the project (Free Mask, training, evaluation, pseudo labels).

mmcv's ``LoadImageFromFile`` decodes with OpenCV by default and with Pillow on request, and the two disagree:
OpenCV turns a 16-bit single-channel TIFF into ``value >> 8`` (a ramp 0..1000 becomes 0..3, an all-black
image), silently returns a partly grey image for a truncated JPEG, and ignores alpha; Pillow in mmcv saturates
the same TIFF at 255. :func:`read_image` gives one answer for every file Pillow can identify, whatever its
extension (``.jfif``, ``.gif``, no extension).
"""
import io
from typing import Optional

import mmengine.fileio as fileio
import numpy as np
from mmcv.transforms import LoadImageFromFile
from PIL import Image, ImageOps, UnidentifiedImageError

from mmdet.registry import TRANSFORMS

__all__ = ['ALPHA_BACKGROUND', 'read_image', 'LoadAnyImageFromFile']

# RGB colour under transparent pixels: the canvas mmcv's Pillow decoder uses for 'LA' images (black would
# shadow black objects). It is close to the ImageNet mean (123.675, 116.28, 103.53), so after the data
# preprocessor's normalisation a transparent area is about 0, neither dark nor bright.
ALPHA_BACKGROUND = (124, 117, 104)

# modes with more than 8 bits per sample (one band): scaled by the image's own maximum
_DEEP_MODES = ('I', 'F', 'I;16', 'I;16L', 'I;16B', 'I;16N')
# modes with an alpha band (lower-case 'a': premultiplied)
_ALPHA_MODES = ('RGBA', 'RGBa', 'LA', 'La', 'PA')


def _to_uint8_gray(img: Image.Image) -> np.ndarray:
    """(H, W) uint8 of a one-band image deeper than 8 bits: ``round(v * 255 / max)``, negative and
    non-finite values 0, an image whose maximum is <= 0 all 0."""
    values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0., posinf=0., neginf=0.)
    peak = values.max(initial=0.)
    if peak <= 0:
        return np.zeros(values.shape, np.uint8)
    return np.rint(np.clip(values, 0, None) * (255. / peak)).astype(np.uint8)


def _composite(img: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image with transparency, composited over :data:`ALPHA_BACKGROUND`:
    ``round(rgb * a / 255 + background * (1 - a / 255))``."""
    rgba = np.asarray(img.convert('RGBA'), dtype=np.float32)
    alpha = rgba[..., 3:] / 255.
    background = np.array(ALPHA_BACKGROUND, np.float32)
    return np.rint(rgba[..., :3] * alpha + background * (1. - alpha)).astype(np.uint8)


def _decode(img: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the current frame of an opened Pillow image (see :func:`read_image`)."""
    img.load()  # decodes: raises on truncated or corrupt data
    img = ImageOps.exif_transpose(img)
    if img.mode in _DEEP_MODES:
        gray = _to_uint8_gray(img)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in _ALPHA_MODES or 'transparency' in img.info:  # or a transparent colour (P, L, RGB)
        return _composite(img)
    return np.asarray(img.convert('RGB'))  # RGB, L, 1, P, CMYK, YCbCr, ...


def read_image(path: str, backend_args: Optional[dict] = None) -> np.ndarray:
    """Read an image with Pillow, as mmdet expects it: (H, W, 3) uint8 BGR.

    Every file Pillow can identify is read, whatever its extension; the result does not depend on the
    format:

    - the EXIF orientation is applied (as OpenCV's ``imread`` and mmcv's Pillow backend do);
    - multi-frame files (GIF, APNG, multi-page TIFF): the first frame;
    - grayscale ('L', '1'): 3 equal channels; palette ('P'), CMYK, YCbCr: converted to RGB;
    - transparency (modes 'RGBA', 'RGBa', 'LA', 'La', 'PA', or a palette / grey / RGB image with a
      transparent colour): composited over :data:`ALPHA_BACKGROUND` (RGB 124, 117, 104),
      ``round(c * a / 255 + background * (1 - a / 255))``. mmcv's Pillow backend does this for 'LA' only
      and drops alpha otherwise (as OpenCV does), which shows whatever colour an editor left under
      transparent pixels (often black); here all alpha images are treated alike;
    - one band deeper than 8 bits (16-bit PNG / TIFF: modes 'I;16', 'I;16B', 'I'; 32-bit float 'F'):
      scaled linearly by the image's own maximum, ``round(v * 255 / max(v))``, so 12-bit data stored in
      16 bits is not dark. Negative and non-finite values become 0; an image whose maximum is <= 0 stays
      all 0. The scale is per image: two images of one sensor with different maxima get different scales.

    Args:
        path (str): The file (local, or any backend of ``backend_args``).
        backend_args (dict, optional): mmengine file backend arguments, as in
            :func:`mmengine.fileio.get`. Defaults to None (chosen from the path).

    Returns:
        np.ndarray: (H, W, 3) uint8, BGR.

    Raises:
        OSError: The file is not an image Pillow can identify, or is truncated or corrupt. The message
            names the file and the reason. Errors reading the file itself (e.g. ``FileNotFoundError``)
            are raised as they are (they name the file too).
    """
    content = fileio.get(path, backend_args=backend_args)
    try:
        with Image.open(io.BytesIO(content)) as img:
            rgb = _decode(img)
    except UnidentifiedImageError:
        raise OSError(f'cannot read image {path}: cannot identify image format '
                      '(not an image, or a format Pillow cannot read)') from None
    except OSError as e:  # Pillow's decoders: 'image file is truncated', 'broken data stream', ...
        raise OSError(f'cannot read image {path}: truncated or corrupt image data ({e})') from e
    except Exception as e:  # e.g. a mode Pillow cannot convert to RGB
        raise OSError(f'cannot read image {path}: {type(e).__name__}: {e}') from e
    return np.ascontiguousarray(rgb[..., ::-1])


@TRANSFORMS.register_module()
class LoadAnyImageFromFile(LoadImageFromFile):
    """:class:`mmcv.transforms.LoadImageFromFile` that decodes with :func:`read_image`: every image
    Pillow can identify, whatever its extension, with EXIF orientation, alpha, palette and deep (16-bit,
    float) images handled, and an error naming the file for truncated or corrupt ones.

    Required Keys:

    - img_path

    Modified Keys:

    - img: (H, W, 3) uint8 BGR, or float32 with ``to_float32``
    - img_shape: (H, W)
    - ori_shape: (H, W)

    Args:
        to_float32 (bool): Convert the image to float32. Defaults to False.
        ignore_empty (bool): Return None instead of raising when the image cannot be read. Defaults to
            False.
        backend_args (dict, optional): mmengine file backend arguments. Defaults to None.
    """

    def __init__(self,
                 to_float32: bool = False,
                 ignore_empty: bool = False,
                 *,
                 backend_args: Optional[dict] = None) -> None:
        super().__init__(to_float32=to_float32, ignore_empty=ignore_empty, backend_args=backend_args)

    def transform(self, results: dict) -> Optional[dict]:
        """Read ``results['img_path']`` into ``img``, ``img_shape`` and ``ori_shape``."""
        try:
            img = read_image(results['img_path'], backend_args=self.backend_args)
        except Exception:
            if self.ignore_empty:
                return None
            raise
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(ignore_empty={self.ignore_empty}, to_float32={self.to_float32}, '
                f'backend_args={self.backend_args})')
