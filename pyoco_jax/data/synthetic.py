"""Moving shapes: the embedded dataset, so training and tests need no download.

Each clip shows one or more shapes of a single type (the class label) gliding
with constant velocity and spin, bouncing off the borders, over a background.
A clip is a pure function of (seed, index), rendered on the fly with antialiased
signed-distance fields, so any index, frame count and resolution can be read in
any order by any worker.

By default the background is dark, gently graded and static, so frames share
little beyond the shapes. Three options make frames share structured content and
move it coherently, as camera footage does (each draws from its own random
stream, so switching one on leaves the rest of the clip unchanged):

- background="texture": static coloured waves, low-frequency colour plus
  mid-frequency detail, that a pan visibly moves.
- camera_speed > 0: the camera pans in a straight line, in a random direction
  per clip. The background and the shapes' reference frame move together: a
  shape's motion on screen is its own velocity minus the camera's. The frame's
  borders are the walls (fixed to the camera), so a bounce reflects that
  combined on-screen motion, and shapes always stay wholly in frame. The pan is
  rounded to whole pixels (at most half a pixel off the straight line), so every
  frame is an exact crop of one background canvas: frames share its pixels
  exactly, without resampling blur.
- occluder=True: an opaque bar in front of everything, crossing the frame at its
  own speed (independent of the pan), partly hiding shapes in some frames. It is
  at most 60% as wide as the narrowest any shape in the clip can be, so no frame
  ever hides a shape completely: across the bar, at least 40% of that narrowest
  width stays uncovered.
"""

import dataclasses
import math

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "rhombus", "ring")
BACKGROUNDS = ("graded", "texture")

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

# The narrowest width of any shape in any rotation, as a multiple of its size: the
# rhombus's across its edges, 1.03 (then the square 1.7, triangle 1.73, cross 1.91,
# circle and ring 2). A band narrower than this cannot cover a shape.
_NARROWEST = 2.0 * 0.6 / float(np.hypot(1.0, 0.6))

# Random streams of the options, children of the clip's (seed, index) stream.
_TEXTURE_STREAM, _CAMERA_STREAM, _OCCLUDER_STREAM = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Bar:
    """The occluder: an opaque band across the frame that moves along its normal."""

    normal: np.ndarray  # (2,) unit vector, x then y
    width: float  # pixels
    positions: np.ndarray  # (F,) pixels: the centreline's offset along `normal` from the frame's top-left corner
    colour: np.ndarray  # (3,) in [0, 1]


@dataclasses.dataclass(frozen=True)
class Scene:
    """Everything that determines one clip; `centres` are pixel (x, y) per object and frame, on screen."""

    label: int
    shapes: tuple[str, ...]
    sizes: np.ndarray  # (K,) pixels
    bounds: np.ndarray  # (K,) pixels: radius that contains the shape in any rotation
    centres: np.ndarray  # (K, F, 2) pixels, x then y
    angles: np.ndarray  # (K, F) radians
    colours: np.ndarray  # (K, 3) in [0, 1]
    background: np.ndarray  # (H', W', 3) in [0, 1]: the static canvas; (H, W) without a pan, larger with one
    camera: np.ndarray  # (F, 2) int: frame f shows background[y : y + H, x : x + W] for (x, y) = camera[f]
    occluder: Bar | None


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
        background: str = "graded",
        camera_speed: float = 0.0,
        occluder: bool = False,
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
        if background not in BACKGROUNDS:
            raise ValueError(f"background={background!r} must be one of {BACKGROUNDS}")
        if not (math.isfinite(camera_speed) and camera_speed >= 0):
            raise ValueError(f"camera_speed={camera_speed} must be a finite number of pixels per frame, >= 0")
        self.num_examples = num_examples
        self.num_frames = num_frames
        self.height, self.width = height, width
        self.num_classes = num_classes
        self.fps = float(fps)
        self.max_objects = max_objects
        self.shape_size = tuple(float(v) for v in shape_size)
        self.background = background
        self.camera_speed = float(camera_speed)
        self.occluder = bool(occluder)
        self.seed = seed

    def __len__(self) -> int:
        return self.num_examples

    def __repr__(self) -> str:
        return (
            f"SyntheticVideoSource(num_examples={self.num_examples}, num_frames={self.num_frames}, "
            f"resolution=({self.height}, {self.width}), num_classes={self.num_classes}, fps={self.fps}, "
            f"max_objects={self.max_objects}, shape_size={self.shape_size}, background={self.background!r}, "
            f"camera_speed={self.camera_speed}, occluder={self.occluder}, seed={self.seed})"
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
        pan = self._pan(index)
        free = start[:, None] + velocity[:, None] * t[None, :, None] - pan[None]  # On screen: own motion minus pan.
        centres = _bounce(free, lo[:, None], hi[:, None])
        angles = rng.uniform(0.0, 2.0 * np.pi, count)[:, None] + rng.uniform(-0.25, 0.25, count)[:, None] * t
        colours = _hsv_to_rgb(rng.uniform(0.0, 1.0, count), rng.uniform(0.6, 1.0, count), rng.uniform(0.75, 1.0, count))
        background, camera = self._canvas(rng, index, pan)
        occluder = self._bar(_stream(self.seed, index, _OCCLUDER_STREAM), sizes) if self.occluder else None
        return Scene(
            label=label,
            shapes=shapes,
            sizes=sizes,
            bounds=bounds,
            centres=centres,
            angles=angles,
            colours=colours,
            background=background,
            camera=camera,
            occluder=occluder,
        )

    def render(self, scene: Scene) -> np.ndarray:
        """Composites the shapes over the background: uint8 (F, H, W, 3).

        Coverage is evaluated only in a square window around each shape, for all
        frames at once; blending then touches just that window per frame. The
        occluder, if any, is drawn last, in front of everything.
        """
        frames = np.stack([scene.background[y : y + self.height, x : x + self.width] for x, y in scene.camera.tolist()])
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
        if scene.occluder is not None:
            _draw_bar(frames, scene.occluder)
        return np.round(frames * 255.0).astype(np.uint8)

    def _pan(self, index: int) -> np.ndarray:
        """The camera's offset (x, y) per frame, from frame 0: a straight pan rounded to whole pixels, (F, 2).

        A fixed camera draws nothing, so the default clips cost no extra stream.
        """
        if not self.camera_speed:
            return np.zeros((self.num_frames, 2))
        heading = _stream(self.seed, index, _CAMERA_STREAM).uniform(0.0, 2.0 * np.pi)
        step = self.camera_speed * np.array([np.cos(heading), np.sin(heading)])
        return np.round(np.arange(self.num_frames)[:, None] * step)

    def _canvas(self, rng: np.random.Generator, index: int, pan: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The background over every pixel some frame shows, and each frame's top-left corner in it (F, 2)."""
        (left, top), (right, bottom) = pan.min(axis=0).astype(int).tolist(), pan.max(axis=0).astype(int).tolist()
        xs = np.arange(left, right + self.width, dtype=np.float32) + 0.5  # World pixel centres.
        ys = np.arange(top, bottom + self.height, dtype=np.float32) + 0.5
        if self.background == "graded":
            background = self._graded(rng, xs, ys)
        else:
            background = _texture(_stream(self.seed, index, _TEXTURE_STREAM), min(self.height, self.width), xs, ys)
        return background, pan.astype(int) - (left, top)

    def _graded(self, rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """The default: a dark colour with a gentle linear ramp, over world pixel centres xs (W',), ys (H',)."""
        base = _hsv_to_rgb(rng.uniform(0.0, 1.0, 1), rng.uniform(0.0, 0.4, 1), rng.uniform(0.05, 0.35, 1))[0]
        tilt = rng.uniform(0.0, 2.0 * np.pi)
        ramp = np.cos(tilt) * (xs / self.width)[None, :] + np.sin(tilt) * (ys / self.height)[:, None] - 0.5
        shade = rng.uniform(-0.12, 0.12, 3)
        return np.clip(base + ramp[..., None] * shade, 0.0, 1.0).astype(np.float32)

    def _bar(self, rng: np.random.Generator, sizes: np.ndarray) -> Bar:
        """An occluder crossing the frame again and again, too narrow to cover any shape of the clip.

        Its width follows the clip's smallest size, never its shape type, so it tells
        nothing about the label. Its track runs from just off one side of the frame to
        just off the other, so it leaves before it re-enters.
        """
        heading = rng.uniform(0.0, 2.0 * np.pi)
        normal = np.array([np.cos(heading), np.sin(heading)])
        width = rng.uniform(0.3, 0.6) * _NARROWEST * float(sizes.min())
        corners = np.array([[0.0, 0.0], [self.width, 0.0], [0.0, self.height], [self.width, self.height]]) @ normal
        low, track = corners.min() - width / 2, np.ptp(corners) + width
        speed = rng.uniform(0.03, 0.1) * min(self.height, self.width)
        positions = low + np.mod(rng.uniform(0.0, track) + speed * np.arange(self.num_frames), track)
        colour = _hsv_to_rgb(rng.uniform(0.0, 1.0, 1), rng.uniform(0.0, 1.0, 1), rng.uniform(0.3, 1.0, 1))[0]
        return Bar(normal=normal, width=width, positions=positions, colour=colour)


def _stream(seed: int, index: int, option: int) -> np.random.Generator:
    """An option's own generator, a child of the clip's: switching the option on changes nothing else."""
    return np.random.default_rng(np.random.SeedSequence((seed, index), spawn_key=(option,)))


def _texture(rng: np.random.Generator, side: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Static coloured waves over world pixel centres xs (W',), ys (H',): (H', W', 3) in [0, 0.5].

    Four low-frequency waves of random colour vary hue and brightness across the
    frame; eight grey mid-frequency waves add detail whose motion a pan makes
    visible. Frequencies are in cycles per frame side, so every resolution shows
    the same scene. Channels stay at most 0.5 while every shape has one of at
    least 0.75, so shapes stand out by at least 64 levels wherever they are.
    """
    low, mid = 4, 8
    cycles = np.concatenate([rng.uniform(0.5, 1.5, low), rng.uniform(3.0, 6.0, mid)])
    heading = rng.uniform(0.0, 2.0 * np.pi, low + mid)
    phase = rng.uniform(0.0, 2.0 * np.pi, low + mid)
    amplitude = np.concatenate([rng.normal(0.0, 0.05, (low, 3)), np.repeat(rng.uniform(0.015, 0.035, (mid, 1)), 3, 1)])
    base = _hsv_to_rgb(rng.uniform(0.0, 1.0, 1), rng.uniform(0.2, 0.6, 1), rng.uniform(0.15, 0.3, 1))[0]
    k = 2.0 * np.pi * cycles / side  # Radians per pixel.
    along_x = (np.cos(heading) * k)[:, None] * xs + phase[:, None]  # (N, W')
    along_y = (np.sin(heading) * k)[:, None] * ys  # (N, H')
    # cos(a + b) = cos a cos b - sin a sin b: per-axis factors, so the whole canvas is one matrix product.
    rows = np.concatenate([np.cos(along_y), -np.sin(along_y)]).T  # (H', 2N)
    columns = np.concatenate([np.cos(along_x), np.sin(along_x)])[:, :, None] * np.tile(amplitude, (2, 1))[:, None]
    waves = (rows @ columns.reshape(len(columns), -1)).reshape(len(ys), len(xs), 3)
    return np.clip(base + waves, 0.0, 0.5).astype(np.float32)


def _draw_bar(frames: np.ndarray, bar: Bar) -> None:
    """Paints the opaque bar over all frames (F, H, W, 3) in place, with the shapes' 1-pixel antialiased edge."""
    height, width = frames.shape[1:3]
    normal, positions = bar.normal.astype(np.float32), bar.positions.astype(np.float32)
    xs = np.arange(width, dtype=np.float32) + 0.5
    ys = np.arange(height, dtype=np.float32)[:, None] + 0.5
    distance = np.abs(xs * normal[0] + ys * normal[1] - positions[:, None, None]) - np.float32(bar.width / 2)
    alpha = np.clip(0.5 - distance, 0.0, 1.0)
    for channel, value in enumerate(bar.colour.astype(np.float32)):  # Per plane: 3x faster than broadcasting (..., 3).
        plane = frames[..., channel]
        plane += alpha * (value - plane)


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
