"""Drawing a scene as a photo-like JPEG: textured background, shapes, grain, compression."""
from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from captioning.data.sample.config import _STAR_INNER
from captioning.data.sample.scene import Background, Instance, ObjectGroup, Scene


def _polygon(instance: Instance, shape: str) -> list[tuple[float, float]]:
    x, y = instance.center
    sides = {"square": 4, "triangle": 3, "star": 10}[shape]
    points = []
    for k in range(sides):
        radius = instance.radius * (_STAR_INNER if shape == "star" and k % 2 else 1.0)
        theta = math.radians(instance.angle + 360.0 * k / sides)
        points.append((x + radius * math.cos(theta), y + radius * math.sin(theta)))
    if shape == "triangle":  # centre the triangle's height on the instance centre
        shift = instance.radius * 0.25 * math.cos(math.radians(instance.angle + 90.0))
        points = [(px, py + shift) for px, py in points]
    return points


def _draw_background(draw: ImageDraw.ImageDraw, background: Background, size: tuple[int, int]) -> None:
    width, height = size
    step, fill = background.spacing, background.pattern_rgb
    if background.texture == "striped":
        for start in range(0, width if background.vertical else height, step * 2):
            box = (start, 0, start + step - 1, height) if background.vertical else (0, start, width, start + step - 1)
            draw.rectangle(box, fill=fill)
    elif background.texture == "checkered":
        for row, top in enumerate(range(0, height, step)):
            for col, left in enumerate(range(0, width, step)):
                if (row + col) % 2:
                    draw.rectangle((left, top, left + step - 1, top + step - 1), fill=fill)
    elif background.texture == "dotted":
        dot = max(2, step // 6)
        for top in range(step // 2, height, step):
            for left in range(step // 2, width, step):
                draw.ellipse((left - dot, top - dot, left + dot, top + dot), fill=fill)


def _draw_group(draw: ImageDraw.ImageDraw, group: ObjectGroup) -> None:
    for instance in group.instances:
        outline = tuple(round(c * 0.7) for c in instance.rgb)
        if group.shape == "circle":
            draw.ellipse(instance.box, fill=instance.rgb, outline=outline, width=2)
        else:
            draw.polygon(_polygon(instance, group.shape), fill=instance.rgb, outline=outline, width=2)


def _add_grain(image: Image.Image, amplitude: int, seed: Sequence[int]) -> Image.Image:
    """Film-like grain: the same random offset in -amplitude..amplitude on a pixel's three channels."""
    if amplitude == 0:
        return image
    random_bytes = np.random.default_rng(list(seed)).bytes(image.width * image.height)
    levels = [value * (2 * amplitude + 1) // 256 for value in range(256)]  # 0..2*amplitude
    grain = Image.frombytes("L", image.size, random_bytes).point(levels)
    return ImageChops.add(image, Image.merge("RGB", (grain, grain, grain)), scale=1.0, offset=-amplitude)


def render_scene(scene: Scene, noise: int = 8, noise_seed: Sequence[int] = (0,)) -> Image.Image:
    """The scene as an RGB image: background texture, objects with outlines, grain."""
    image = Image.new("RGB", (scene.width, scene.height), scene.background.rgb)
    draw = ImageDraw.Draw(image)
    _draw_background(draw, scene.background, image.size)
    for group in scene.groups:
        _draw_group(draw, group)
    return _add_grain(image, noise, noise_seed)


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
