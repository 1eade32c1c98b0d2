"""`pyoco_ucf101/split{1,2,3}`: UCF-101 from its official files, one config per train/test split.

Manual dir (the official distribution, https://www.crcv.ucf.edu/data/UCF101.php):
  UCF-101/<Class>/v_<Class>_gXX_cYY.avi   UCF101.rar extracted (Python cannot read rar:
                                          `unrar x UCF101.rar` or `7z x UCF101.rar`)
  UCF101TrainTestSplits-RecognitionTask.zip   as downloaded, or extracted (ucfTrainTestlist/)
Labels are classInd.txt's numbers minus one (0..100); the caption is the class
name in words ("ApplyEyeMakeup" -> "apply eye makeup").
"""

import os
import re
import zipfile

import tensorflow_datasets as tfds

from pyoco_jax.data.builders.features import EncodedVideoBuilder, read_bytes, video_features

SPLITS_ZIP = "UCF101TrainTestSplits-RecognitionTask.zip"
VIDEO_DIR = "UCF-101"


class PyocoUcf101(EncodedVideoBuilder):
    """UCF-101 action recognition videos (13,320 clips, 101 classes), train/test of one official split."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name=f"split{n}", description=f"trainlist0{n}.txt / testlist0{n}.txt")
        for n in (1, 2, 3)
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="UCF-101 videos as the original .avi bytes, with class labels and captions.",
            features=video_features(),
            homepage="https://www.crcv.ucf.edu/data/UCF101.php",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = os.fspath(dl_manager.manual_dir)
        videos = find_video_dir(root)
        lists = SplitFiles(root)
        classes = parse_class_index(lists.read("classInd.txt"))
        self.info.features["label"].names = classes
        number = int(self.builder_config.name.removeprefix("split"))
        return {
            name: self._generate_examples(videos, parse_split_list(lists.read(f"{name}list0{number}.txt"), classes))
            for name in ("train", "test")
        }

    def _generate_examples(self, videos: str, entries: list[tuple[str, int]]):
        missing = [path for path, _ in entries if not os.path.isfile(os.path.join(videos, path))]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} videos of the split list are not under {videos}, e.g. {missing[:3]}; "
                "extract the whole UCF101.rar there"
            )
        for path, label in entries:
            yield (
                path,
                {
                    "encoded_video": read_bytes(os.path.join(videos, path)),
                    "label": label,
                    "caption": class_caption(path.split("/")[0]),
                    "path": path,
                    "start": 0.0,
                    "end": -1.0,
                },
            )


def find_video_dir(root: str) -> str:
    """The extracted UCF-101 folder; a clear message when only the rar archive is there."""
    videos = os.path.join(root, VIDEO_DIR)
    if os.path.isdir(videos):
        return videos
    if os.path.isfile(os.path.join(root, "UCF101.rar")):
        raise FileNotFoundError(
            f"found {root}/UCF101.rar but not the extracted {videos}/ folder. rar archives cannot be unpacked "
            f"without an external tool: run `unrar x UCF101.rar` (or `7z x UCF101.rar`) in {root} so that "
            f"{videos}/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi exists, then build again"
        )
    raise FileNotFoundError(
        f"no {videos}/ folder: download UCF101.rar from https://www.crcv.ucf.edu/data/UCF101.php and extract it in "
        f"{root} (`unrar x UCF101.rar`)"
    )


class SplitFiles:
    """classInd.txt / trainlist0N.txt / testlist0N.txt from the official zip or its extracted folder."""

    def __init__(self, root: str):
        self.root = root
        self.folders = [os.path.join(root, "ucfTrainTestlist"), root]
        self.archive = os.path.join(root, SPLITS_ZIP)

    def read(self, name: str) -> str:
        for folder in self.folders:
            if os.path.isfile(os.path.join(folder, name)):
                with open(os.path.join(folder, name), encoding="utf-8") as file:
                    return file.read()
        if os.path.isfile(self.archive):
            with zipfile.ZipFile(self.archive) as archive:
                members = [member for member in archive.namelist() if member.rsplit("/", 1)[-1] == name]
                if members:
                    return archive.read(members[0]).decode("utf-8")
        raise FileNotFoundError(
            f"no {name} in {self.root}/ucfTrainTestlist/ or {self.archive}; download {SPLITS_ZIP} from "
            "https://www.crcv.ucf.edu/data/UCF101.php into the manual dir"
        )


def parse_class_index(text: str) -> list[str]:
    """classInd.txt ('1 ApplyEyeMakeup' per line) -> class names in label order (label = number - 1)."""
    numbered = {}
    for line in text.splitlines():
        if line.strip():
            number, name = line.split()
            numbered[int(number)] = name
    if sorted(numbered) != list(range(1, len(numbered) + 1)):
        raise ValueError(f"classInd.txt must number its classes 1..N, got {sorted(numbered)}")
    return [numbered[n] for n in sorted(numbered)]


def parse_split_list(text: str, classes: list[str]) -> list[tuple[str, int]]:
    """trainlist ('Class/v_Class_g08_c01.avi 1') or testlist ('Class/v_...avi') -> (path, 0-based label)."""
    label_of = {name: i for i, name in enumerate(classes)}
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        path = parts[0].replace("\\", "/")
        folder = path.split("/")[0]
        if folder not in label_of:
            raise ValueError(f"split list entry {path!r} names class {folder!r}, which is not in classInd.txt")
        label = label_of[folder]
        if len(parts) > 1 and int(parts[1]) - 1 != label:
            raise ValueError(f"split list entry {line.strip()!r} disagrees with classInd.txt ({folder} is {label + 1})")
        entries.append((path, label))
    return entries


def class_caption(name: str) -> str:
    """'ApplyEyeMakeup' -> 'apply eye makeup'."""
    return " ".join(re.findall(r"[A-Z]+[a-z]*|[a-z]+|\d+", name)).lower()


def prepare_ucf101(manual_dir: str, data_dir: str | None, *, split: int = 1) -> PyocoUcf101:
    """Builds (once) official split `split` (1, 2 or 3) under `data_dir` (None: TFDS's default); read it with
    data.source='ucf101'."""
    builder = PyocoUcf101(config=f"split{split}", data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder
