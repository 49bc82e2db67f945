"""Image operations every simulator and dataset shares: the protocol's rotation and resizing."""

from __future__ import annotations

import numpy as np
from PIL import Image


def rotate(image: np.ndarray, rotation_deg: int) -> np.ndarray:
    """Rotate a frame as a protocol says (0 or 180 degrees: LIBERO's renders are upside down)."""
    if rotation_deg == 180:
        return image[::-1, ::-1]
    if rotation_deg != 0:
        raise ValueError(f"unsupported rotation {rotation_deg}")
    return image


def resize_bilinear(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize an (H, W[, C]) uint8 image or float map bilinearly to size x size (or (width, height)),
    keeping its dtype (uint8 or float32); an image already that size is returned as it is."""
    width, height = (size, size) if isinstance(size, int) else size
    dtype = np.uint8 if image.dtype == np.uint8 else np.float32
    image = np.ascontiguousarray(image, dtype=dtype)
    if image.shape[0] != height or image.shape[1] != width:
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(image, dtype=dtype)


#: The protocol's `image_resize` values: PIL's bilinear filter (the default of every suite here) and
#: OpenCV's 8x8 Lanczos (INTER_LANCZOS4), with which open-pi-zero resizes SimplerEnv's frames.
RESIZE_METHODS = ("bilinear", "lanczos4")


def resize_frame(image: np.ndarray, size: int, method: str = "bilinear") -> np.ndarray:
    """A uint8 camera frame resized to size x size by the protocol's method."""
    if method == "bilinear":
        return resize_bilinear(image, size)
    if method != "lanczos4":
        raise ValueError(f"unknown image_resize {method!r}: {', '.join(RESIZE_METHODS)}")
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image, dtype=np.uint8)
    import cv2

    resized = cv2.resize(np.ascontiguousarray(image, dtype=np.uint8), (size, size), interpolation=cv2.INTER_LANCZOS4)
    return np.ascontiguousarray(resized, dtype=np.uint8)
