"""The embedded procedural world: shapes with colours, sizes, positions, textured scenes and distractors.

Each image holds one main object and a few small distractor objects on a textured background; the
caption names the main object's class and some of its attributes; an instance map gives a mask per
object (0 = background, 1 = main object, 2.. = distractors). Everything is drawn from one
`numpy.random.Generator`, so a seed fixes every byte.
"""

import re

import numpy as np

SHAPES = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "heart",
    "diamond",
    "ring",
    "hexagon",
    "crescent",
    "pentagon",
    "ellipse",
    "arrow",
    "house",
    "rectangle",
    "semicircle",
    "trapezoid",
    "hourglass",
    "chevron",
    "flower",
)

COLOURS = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.15, 0.80, 0.20),
    "blue": (0.15, 0.35, 0.95),
    "yellow": (0.95, 0.90, 0.15),
    "orange": (0.98, 0.55, 0.10),
    "purple": (0.60, 0.20, 0.85),
    "pink": (0.98, 0.50, 0.75),
    "cyan": (0.15, 0.90, 0.90),
    "white": (0.97, 0.97, 0.97),
    "brown": (0.55, 0.33, 0.15),
}

BACKGROUNDS = ("plain", "striped", "dotted", "checkered", "noisy", "gradient", "wavy", "grid")

TEMPLATES = (
    "a photo of a {colour} {shape}.",
    "a {size} {colour} {shape} on a {background} background.",
    "a {shape} {position}.",
    "{colour} {shape}",
    "a picture of a {shape} next to a {d_colour} {d_shape}.",
    "there is a {size} {shape} in the image.",
    "a {background} scene with a {colour} {shape}.",
    "a {colour} {shape} {position} of a {background} picture.",
    "an image of a {size} {shape}.",
    "a drawing of a {shape}.",
)

SUPERSAMPLE = 4


def _polygon(u, v, n, rotation=0.0, radius=1.0):
    """Inside test for a regular n-gon of circumradius `radius`."""
    theta = np.arctan2(v, u) - rotation
    r = np.hypot(u, v)
    sector = 2 * np.pi / n
    local = np.mod(theta, sector) - sector / 2
    return r * np.cos(local) <= radius * np.cos(np.pi / n)


def shape_mask(shape, u, v):
    """Boolean silhouette of `shape` in object coordinates u (right), v (up), unit radius."""
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    au, av = np.abs(u), np.abs(v)
    if shape == "circle":
        return r <= 1.0
    if shape == "square":
        return np.maximum(au, av) <= 0.78
    if shape == "triangle":
        return _polygon(u, v, 3, rotation=np.pi / 2)
    if shape == "star":
        k = np.cos(5 * (theta - np.pi / 2))
        return r <= 0.45 + 0.55 * np.clip(k, 0, 1) ** 2
    if shape == "cross":
        return ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))
    if shape == "heart":
        x, y = u * 1.15, v * 1.15 + 0.1
        return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0
    if shape == "diamond":
        return au / 0.75 + av <= 1.0
    if shape == "ring":
        return (r <= 1.0) & (r >= 0.58)
    if shape == "hexagon":
        return _polygon(u, v, 6)
    if shape == "crescent":
        return (r <= 1.0) & (np.hypot(u - 0.45, v - 0.15) > 0.8)
    if shape == "pentagon":
        return _polygon(u, v, 5, rotation=np.pi / 2)
    if shape == "ellipse":
        return (u / 1.0) ** 2 + (v / 0.5) ** 2 <= 1.0
    if shape == "arrow":
        shaft = (u >= -1.0) & (u <= 0.1) & (av <= 0.25)
        head = (u > 0.1) & (u <= 1.0) & (av <= 0.9 * (1.0 - u) / 0.9)
        return shaft | head
    if shape == "house":
        body = (au <= 0.65) & (v <= 0.1) & (v >= -0.9)
        roof = (v > 0.1) & (v <= 1.0) & (au <= 0.9 * (1.0 - v) / 0.9)
        return body | roof
    if shape == "rectangle":
        return (au <= 1.0) & (av <= 0.45)
    if shape == "semicircle":
        return (np.hypot(u, v + 0.45) <= 1.0) & (v >= -0.45)
    if shape == "trapezoid":
        return (av <= 0.6) & (au <= 0.55 + 0.45 * (0.6 - v) / 1.2)
    if shape == "hourglass":
        return (av <= 0.95) & (au <= 0.15 + 0.8 * av)
    if shape == "chevron":
        w = v - 0.8 * (1 - au)
        return (au <= 0.95) & (w <= 0.25) & (w >= -0.35)
    if shape == "flower":
        return r <= 0.42 + 0.58 * np.abs(np.cos(2 * theta))
    raise KeyError(f"unknown shape {shape!r}")


def render_object(shape, size, cx, cy, radius, rotation=0.0):
    """Anti-aliased coverage in [0,1] of one object on a size×size canvas (pixel units)."""
    n = size * SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / SUPERSAMPLE
    xx, yy = np.meshgrid(coords, coords)
    dx, dy = (xx - cx) / radius, -(yy - cy) / radius
    c, s = np.cos(rotation), np.sin(rotation)
    u, v = c * dx + s * dy, -s * dx + c * dy
    inside = shape_mask(shape, u, v).astype(np.float32)
    return inside.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))


def render_background(kind, size, rng):
    """A textured background, dark-to-mid so that the bright objects stand out."""
    base = rng.uniform(0.05, 0.45, size=3)
    alt = np.clip(base + rng.uniform(-0.2, 0.2, size=3), 0, 0.55)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(3.0, 7.0)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "plain":
        t = np.zeros((size, size), np.float32)
    elif kind == "striped":
        angle = rng.uniform(0, np.pi)
        t = (np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period + phase) > 0).astype(
            np.float32
        )
    elif kind == "dotted":
        t = (
            (np.mod(x + phase, period) - period / 2) ** 2 + (np.mod(y + phase, period) - period / 2) ** 2
            <= (period / 4) ** 2
        ).astype(np.float32)
    elif kind == "checkered":
        t = ((np.floor(x / period) + np.floor(y / period)) % 2).astype(np.float32)
    elif kind == "noisy":
        t = rng.uniform(0, 1, size=(size, size)).astype(np.float32)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        t = (x * np.cos(angle) + y * np.sin(angle)) / size
        t = (t - t.min()) / (t.max() - t.min())
    elif kind == "wavy":
        t = 0.5 + 0.5 * np.sin(y * 2 * np.pi / period + 2.0 * np.sin(x * 2 * np.pi / (2 * period) + phase))
    elif kind == "grid":
        t = ((np.mod(x + phase, period) < 1) | (np.mod(y + phase, period) < 1)).astype(np.float32)
    else:
        raise KeyError(f"unknown background {kind!r}")
    return base[None, None, :] * (1 - t[..., None]) + alt[None, None, :] * t[..., None]


def _position_word(cx, cy, size):
    third = size / 3
    horizontal = "left" if cx < third else ("right" if cx > 2 * third else "")
    vertical = "top" if cy < third else ("bottom" if cy > 2 * third else "")
    if not horizontal and not vertical:
        return "in the middle"
    if horizontal and vertical:
        return f"at the {vertical} {horizontal}"
    return f"on the {horizontal}" if horizontal else f"at the {vertical}"


def render_scene(
    rng, shapes, image_size, radius_range, max_distractors, distractor_shapes=SHAPES, label=None
):
    """Draw one scene. Returns (uint8 HxWx3 image, uint8 instance map, main class index, caption)."""
    label = int(rng.integers(len(shapes))) if label is None else int(label)
    shape = shapes[label]
    colour_names = list(COLOURS)
    colour = colour_names[rng.integers(len(colour_names))]
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    radius = rng.uniform(*radius_range)
    margin = radius * 0.9
    cx, cy = rng.uniform(margin, image_size - margin, size=2)
    rotation = rng.uniform(-0.25, 0.25)

    canvas = render_background(background, image_size, rng)
    instances = np.zeros((image_size, image_size), np.uint8)
    distractors = []
    for k in range(int(rng.integers(max_distractors + 1))):
        d_shape = distractor_shapes[rng.integers(len(distractor_shapes))]
        d_colour = colour_names[rng.integers(len(colour_names))]
        d_radius = rng.uniform(2.5, 4.0)
        dx, dy = rng.uniform(d_radius, image_size - d_radius, size=2)
        if np.hypot(dx - cx, dy - cy) < radius + d_radius + 1:
            continue
        cover = render_object(d_shape, image_size, dx, dy, d_radius)
        canvas = canvas * (1 - cover[..., None]) + np.array(COLOURS[d_colour]) * cover[..., None]
        instances[(cover >= 0.5) & (instances == 0)] = 2 + k
        distractors.append((d_colour, d_shape))

    cover = render_object(shape, image_size, cx, cy, radius, rotation)
    shade = np.clip(np.array(COLOURS[colour]) * rng.uniform(0.85, 1.1), 0, 1)
    canvas = canvas * (1 - cover[..., None]) + shade * cover[..., None]
    instances[cover >= 0.5] = 1

    d_colour, d_shape = distractors[0] if distractors else ("grey", "dot")
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    if "{d_shape}" in template and not distractors:
        template = TEMPLATES[0]
    caption = template.format(
        shape=shape,
        colour=colour,
        background=background,
        d_colour=d_colour,
        d_shape=d_shape,
        size="large" if radius >= 10 else "small",
        position=_position_word(cx, cy, image_size),
    )
    caption = re.sub(r"\ba ([aeiou])", r"an \1", caption)
    image = np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8)
    return image, instances, label, caption
