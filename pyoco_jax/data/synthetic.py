"""Moving shapes: the embedded dataset, so training and tests need no download.

Each clip shows one or more shapes of a single type (the class label) gliding
with constant velocity and spin, bouncing off the borders, over a dark, gently
graded background. A clip is a pure function of (seed, index), rendered on the
fly with antialiased signed-distance fields, so any index, frame count and
resolution can be read in any order by any worker.
"""

import dataclasses

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "rhombus", "ring")

# Radius of the circle around each shape's centre that contains it in every
# rotation, as a multiple of its size; keeping this circle inside the frame keeps
# the whole shape visible.
_BOUND = {
    "circle": 1.0,
    "square": 0.85 * np.sqrt(2.0),
    "triangle": 1.15,
    "cross": float(np.hypot(1.0, 0.35)),
    "rhombus": 1.0,
    "ring": 1.0,
}


@dataclasses.dataclass(frozen=True)
class Scene:
    """Everything that determines one clip; `centres` are pixel (x, y) per object and frame."""

    label: int
    shapes: tuple[str, ...]
    sizes: np.ndarray  # (K,) pixels
    bounds: np.ndarray  # (K,) pixels: radius that contains the shape in any rotation
    centres: np.ndarray  # (K, F, 2) pixels, x then y
    angles: np.ndarray  # (K, F) radians
    colours: np.ndarray  # (K, 3) in [0, 1]
    background: np.ndarray  # (H, W, 3) in [0, 1]


def check_shape_size(shape_size: tuple[float, float]) -> None:
    """A shape's size (its circle's radius) is drawn from this range, as fractions of the frame's shorter side."""
    low, high = shape_size
    if not 0.0 < low <= high <= 0.4:
        raise ValueError(
            f"shape_size={tuple(shape_size)} must be (low, high) with 0 < low <= high <= 0.4 (fractions of the "
            "frame's shorter side; larger shapes cannot move without leaving the frame)"
        )


class SyntheticVideoSource:
    """Random-access source of moving-shape clips (grain `RandomAccessDataSource`).

    Elements are dicts: video uint8 (F, H, W, 3), label int32 scalar (shape type;
    0 for every clip when `num_classes` is 0), fps float32 scalar.
    """

    def __init__(
        self,
        num_examples: int,
        num_frames: int,
        resolution: int | tuple[int, int],
        *,
        num_classes: int = 0,
        fps: float = 8.0,
        max_objects: int = 2,
        shape_size: tuple[float, float] = (0.10, 0.20),
        seed: int = 0,
    ):
        height, width = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        if num_examples < 1 or num_frames < 1 or height < 4 or width < 4:
            raise ValueError(
                f"synthetic data needs num_examples >= 1, num_frames >= 1 and a resolution of at least 4 pixels; "
                f"got num_examples={num_examples}, num_frames={num_frames}, resolution={resolution}"
            )
        if not 0 <= num_classes <= len(SHAPES):
            raise ValueError(
                f"synthetic data has {len(SHAPES)} shape classes {SHAPES}; num_classes={num_classes} must be in "
                f"0..{len(SHAPES)} (0: unconditional)"
            )
        if max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {max_objects}")
        check_shape_size(shape_size)
        self.num_examples = num_examples
        self.num_frames = num_frames
        self.height, self.width = height, width
        self.num_classes = num_classes
        self.fps = float(fps)
        self.max_objects = max_objects
        self.shape_size = tuple(float(v) for v in shape_size)
        self.seed = seed

    def __len__(self) -> int:
        return self.num_examples

    def __repr__(self) -> str:
        return (
            f"SyntheticVideoSource(num_examples={self.num_examples}, num_frames={self.num_frames}, "
            f"resolution=({self.height}, {self.width}), num_classes={self.num_classes}, fps={self.fps}, "
            f"max_objects={self.max_objects}, shape_size={self.shape_size}, seed={self.seed})"
        )

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        scene = self.scene(index)
        return {
            "video": self.render(scene),
            "label": np.asarray(scene.label, np.int32),
            "fps": np.asarray(self.fps, np.float32),
        }

    def scene(self, index: int) -> Scene:
        """Draws the clip's parameters from a generator seeded by (seed, index) alone."""
        index = int(index)
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index {index} out of range for {self.num_examples} synthetic clips")
        rng = np.random.default_rng((self.seed, index))
        side = float(min(self.height, self.width))
        if self.num_classes:
            label = index % self.num_classes
            kind = SHAPES[label]
        else:
            label = 0
            kind = SHAPES[rng.integers(len(SHAPES))]
        count = int(rng.integers(1, self.max_objects + 1))
        shapes = (kind,) * count
        sizes = np.maximum(rng.uniform(*self.shape_size, count) * side, 1.5)
        bounds = sizes * _BOUND[kind]
        lo, hi = bounds[:, None], np.array([self.width, self.height], np.float64)[None] - bounds[:, None]
        start = rng.uniform(lo, np.maximum(hi, lo))
        speed = rng.uniform(0.02, 0.06, count) * side
        heading = rng.uniform(0.0, 2.0 * np.pi, count)
        velocity = np.stack([np.cos(heading), np.sin(heading)], -1) * speed[:, None]
        t = np.arange(self.num_frames, dtype=np.float64)
        centres = _bounce(start[:, None] + velocity[:, None] * t[None, :, None], lo[:, None], hi[:, None])
        angles = rng.uniform(0.0, 2.0 * np.pi, count)[:, None] + rng.uniform(-0.25, 0.25, count)[:, None] * t
        colours = _hsv_to_rgb(rng.uniform(0.0, 1.0, count), rng.uniform(0.6, 1.0, count), rng.uniform(0.75, 1.0, count))
        return Scene(
            label=label,
            shapes=shapes,
            sizes=sizes,
            bounds=bounds,
            centres=centres,
            angles=angles,
            colours=colours,
            background=self._background(rng),
        )

    def render(self, scene: Scene) -> np.ndarray:
        """Composites the shapes over the background: uint8 (F, H, W, 3).

        Coverage is evaluated only in a square window around each shape, for all
        frames at once; blending then touches just that window per frame.
        """
        frames = np.repeat(scene.background[None], self.num_frames, axis=0)
        steps = np.arange(self.num_frames)
        for k, kind in enumerate(scene.shapes):
            window_h = min(self.height, int(np.ceil(2 * scene.bounds[k])) + 3)
            window_w = min(self.width, int(np.ceil(2 * scene.bounds[k])) + 3)
            cx, cy = scene.centres[k, :, 0], scene.centres[k, :, 1]
            left = np.clip(np.floor(cx - window_w / 2).astype(int), 0, self.width - window_w)
            top = np.clip(np.floor(cy - window_h / 2).astype(int), 0, self.height - window_h)
            dx = (left[:, None] + np.arange(window_w) + 0.5 - cx[:, None]).astype(np.float32)[:, None, :]
            dy = (top[:, None] + np.arange(window_h) + 0.5 - cy[:, None]).astype(np.float32)[:, :, None]
            cos = np.cos(scene.angles[k]).astype(np.float32)[:, None, None]
            sin = np.sin(scene.angles[k]).astype(np.float32)[:, None, None]
            u, v = cos * dx + sin * dy, cos * dy - sin * dx
            distance = _signed_distance(kind, u, v, np.float32(scene.sizes[k]))
            alpha = np.clip(0.5 - distance, 0.0, 1.0)[..., None]  # pixel coverage: 1-pixel antialiased edge
            colour = scene.colours[k].astype(np.float32)
            for t, y, x in zip(steps, top, left, strict=True):
                patch = frames[t, y : y + window_h, x : x + window_w]
                patch += alpha[t] * (colour - patch)
        return np.round(frames * 255.0).astype(np.uint8)

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        base = _hsv_to_rgb(rng.uniform(0.0, 1.0, 1), rng.uniform(0.0, 0.4, 1), rng.uniform(0.05, 0.35, 1))[0]
        tilt = rng.uniform(0.0, 2.0 * np.pi)
        xs = (np.arange(self.width, dtype=np.float32) + 0.5)[None, :] / self.width
        ys = (np.arange(self.height, dtype=np.float32) + 0.5)[:, None] / self.height
        ramp = np.cos(tilt) * xs + np.sin(tilt) * ys - 0.5
        shade = rng.uniform(-0.12, 0.12, 3)
        return np.clip(base + ramp[..., None] * shade, 0.0, 1.0).astype(np.float32)


def _bounce(position: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Folds free motion into [lo, hi]: the path of a point reflecting off both walls."""
    span = np.maximum(hi - lo, 1e-6)
    phase = np.mod(position - lo, 2.0 * span)
    return lo + span - np.abs(phase - span)


def _box(u: np.ndarray, v: np.ndarray, half_u: float, half_v: float) -> np.ndarray:
    qu, qv = np.abs(u) - half_u, np.abs(v) - half_v
    outside = np.hypot(np.maximum(qu, 0.0), np.maximum(qv, 0.0))
    return outside + np.minimum(np.maximum(qu, qv), 0.0)


def _triangle(u: np.ndarray, v: np.ndarray, circumradius: float) -> np.ndarray:
    """Exact distance to an equilateral triangle centred on the origin."""
    k = np.float32(np.sqrt(3.0))
    half_side = circumradius * k / 2
    pu = np.abs(u) - half_side
    pv = v + half_side / k
    flip = pu + k * pv > 0
    pu, pv = np.where(flip, (pu - k * pv) / 2, pu), np.where(flip, (-k * pu - pv) / 2, pv)
    pu = pu - np.clip(pu, -2 * half_side, 0.0)
    return -np.hypot(pu, pv) * np.sign(pv)


def _signed_distance(kind: str, u: np.ndarray, v: np.ndarray, size: np.float32) -> np.ndarray:
    """Signed distance in pixels (negative inside) to a shape of the given size at the origin."""
    if kind == "circle":
        return np.hypot(u, v) - size
    if kind == "square":
        return _box(u, v, 0.85 * size, 0.85 * size)
    if kind == "triangle":
        return _triangle(u, v, 1.15 * size)
    if kind == "cross":
        return np.minimum(_box(u, v, size, 0.35 * size), _box(u, v, 0.35 * size, size))
    if kind == "rhombus":
        a, b = size, 0.6 * size
        return (np.abs(u) * b + np.abs(v) * a - a * b) / np.float32(np.hypot(a, b))
    if kind == "ring":
        return np.abs(np.hypot(u, v) - 0.7 * size) - 0.3 * size
    raise ValueError(f"unknown shape {kind!r}; known: {SHAPES}")


def _hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """(N,) HSV in [0, 1] -> (N, 3) RGB in [0, 1]."""
    sector = np.floor(hue * 6.0)
    frac = hue * 6.0 - sector
    p, q, t = value * (1 - saturation), value * (1 - frac * saturation), value * (1 - (1 - frac) * saturation)
    table = np.stack(
        [
            np.stack([value, t, p], -1),
            np.stack([q, value, p], -1),
            np.stack([p, value, t], -1),
            np.stack([p, q, value], -1),
            np.stack([t, p, value], -1),
            np.stack([value, p, q], -1),
        ],
        0,
    )
    return table[sector.astype(int) % 6, np.arange(hue.shape[0])]
