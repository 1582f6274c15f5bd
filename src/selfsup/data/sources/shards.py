"""WebDataset shards, streamed: local files, brace lists, globs, folders of shards, http(s) URLs.

Members are `KEY.jpg|png|...` images or `KEY.wav` audio, `KEY.cls` label, `KEY.json` metadata;
`classes.txt` next to the shards names the classes. Streams split themselves over ranks and
workers (`split.reader_split`) and resume mid-epoch.
"""

from __future__ import annotations

import glob
import json
import random
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from braceexpand import braceexpand
from torch.utils.data import Dataset, IterableDataset

from selfsup.data.decode import IMAGE_EXTS, DecodeError, decode_image, decode_wav
from selfsup.data.sources.base import Ranks, Source, SourceError, skip
from selfsup.data.sources.folder import probe_images, task_name
from selfsup.data.sources.split import SHUFFLE_BUFFER, Positions, reader_split, resume_start, shuffled
from selfsup.data.sources.tar import is_url, tar_samples
from selfsup.data.spec import InputSpec, captions_of

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def _expand_shards(spec: str) -> list[str]:
    """Brace lists, globs, a folder of `*.tar*` files, single files and URLs -> shard list."""
    if is_url(spec):
        return list(braceexpand(spec))
    path = Path(spec).expanduser()
    if path.is_dir():
        shards = sorted(str(f) for f in path.iterdir() if f.is_file() and f.name.endswith(SHARD_SUFFIXES))
        if not shards:
            raise SourceError(f"{path}: no shards (*.tar, *.tar.gz) in this folder")
        return shards
    shards = []
    for s in braceexpand(str(path)):
        if glob.has_magic(s):
            matches = sorted(glob.glob(s))
            if not matches:
                raise SourceError(f"{s}: no files match")
            shards += matches
        elif not Path(s).is_file():
            raise SourceError(f"{s}: no such file")
        else:
            shards.append(s)
    return shards


def _class_names(first_shard: str) -> list[str] | None:
    """`classes.txt` (one name per line, in index order) next to the shards, when there is one."""
    try:
        if first_shard.startswith(("http://", "https://")):
            with urllib.request.urlopen(first_shard.rsplit("/", 1)[0] + "/classes.txt", timeout=10) as r:
                text = r.read().decode()
        elif is_url(first_shard):
            return None
        else:
            text = (Path(first_shard).parent / "classes.txt").read_text()
    except Exception:
        return None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    return names or None


def _label(data: bytes | None, num_classes: int | None = None) -> int:
    """A `.cls` member -> class index; -1 when absent. Raises DecodeError("bad label") for text,
    a negative number, or one out of range of `num_classes` (when the class names are known)."""
    if data is None:
        return -1
    try:
        label = int(data.decode().strip())
    except (ValueError, UnicodeDecodeError):
        raise DecodeError(f"bad label: {data[:20]!r}") from None
    if label < 0 or (num_classes is not None and label >= num_classes):
        raise DecodeError(f"bad label: {label} out of range" + (f" 0..{num_classes - 1}" if num_classes else ""))
    return label


def _meta(data: bytes | None, strict: bool = False) -> dict:
    """A `.json` member -> dict ({} when absent). `strict`: DecodeError("bad json") unless an object."""
    try:
        meta = json.loads(data) if data else {}
    except (ValueError, UnicodeDecodeError):
        if strict:
            raise DecodeError("bad json: does not parse") from None
        return {}
    if not isinstance(meta, dict):
        if strict:
            raise DecodeError(f"bad json: a {type(meta).__name__}, not an object")
        return {}
    return meta


class ShardSource(Source):
    """WebDataset shards: `KEY.jpg|png|...` images or `KEY.wav` audio, `.cls` label, `.json` metadata.

    The modality comes from the first sample of the first shard: an image with a json holding
    `captions` -> "image_text"; a wav -> "audio_text" when its json has `text`, else "audio".
    """

    def __init__(self, spec: str, *, image_size: int | None, channels: int | None) -> None:
        self.location = spec
        self.shards = _expand_shards(spec)
        if not self.shards:
            raise SourceError(f"{spec}: no shards found")
        first = self.shards[0]
        url = is_url(first)
        folder = PurePosixPath(urlparse(first).path).parent if url else Path(first).resolve().parent
        self.name = task_name(folder) or Path(first).name.split(".")[0]
        head: list[tuple[str, dict]] = []  # the first samples tell modality, channels and size
        try:
            for sample in tar_samples(first):
                if isinstance(sample, tuple):  # skip markers (unsafe names) say nothing of the data
                    head.append(sample)
                if len(head) == 16:
                    break
        except Exception as e:
            if not head:  # damage further in is skipped while streaming
                raise SourceError(f"{first}: not a readable tar shard ({type(e).__name__}: {e})") from e
        if not head:
            raise SourceError(f"{first}: empty shard")
        key, members = head[0]
        meta = _meta(members.get("json"))
        class_names = _class_names(first)
        if "wav" in members:
            self.image_ext = None
            modality = "audio_text" if "text" in meta else "audio"
            try:
                sample_rate = decode_wav(members["wav"])[1]
            except DecodeError:
                sample_rate = None
            self.spec = InputSpec(modality=modality, channels=1, sample_rate=sample_rate)
        else:
            self.image_ext = next((e for e in IMAGE_EXTS if e in members), None)
            if self.image_ext is None:
                raise SourceError(f"{first}: first sample {key!r} has no image ({'|'.join(IMAGE_EXTS)})/wav")
            ch, size, self.bits = probe_images([m for _, m in head], lambda m: m.get(self.image_ext, b""), first)
            modality = "image_text" if isinstance(meta.get("captions"), list) else "image"
            self.spec = InputSpec(modality=modality, channels=channels or ch, image_size=image_size or size)
        self.spec.class_names = class_names
        self.spec.num_classes = len(class_names) if class_names else None

    def dataset(
        self, *, shuffle: bool = False, seed: int = 0, epoch_repeat: bool = False, ranks: Ranks | None = None
    ) -> Dataset:
        return ShardStream(self, shuffle=shuffle, seed=seed, epoch_repeat=epoch_repeat, ranks=ranks)

    def decode(self, key: str, members: dict[str, bytes], rng: random.Random | None) -> dict:
        """One grouped sample -> contract sample or skip marker. `rng` picks a caption (else the first).

        Skipped, with the reason: an undecodable image/audio, a `.cls` that is not a class index
        in range ("bad label"), a `.json` that is not a JSON object ("bad json").
        """
        try:
            meta = _meta(members.get("json"), strict=True)
            sample = {"key": key, "label": _label(members.get("cls"), self.spec.num_classes)}
            if self.spec.modality.startswith("audio"):
                if "wav" not in members:
                    return skip(key, "no audio")
                sample["audio"] = decode_wav(members["wav"])[0]
                sample["text"] = str(meta.get("text", ""))
                return sample
            ext = next((e for e in (self.image_ext, *IMAGE_EXTS) if e in members), None)
            if ext is None:
                return skip(key, "no image")
            sample["image"] = decode_image(members[ext], self.spec.channels, self.spec.image_size, bits=self.bits)
        except DecodeError as e:
            return skip(key, str(e))
        if self.spec.modality == "image_text":
            captions = captions_of(meta) or [""]
            sample["captions"] = captions
            sample["text"] = rng.choice(captions) if rng is not None else captions[0]
        return sample


class ShardStream(IterableDataset):
    """Streams a ShardSource: shard order shuffled per epoch, then a buffer of raw samples.

    Readers (ranks x workers) each take every n-th shard; with fewer shards than readers they all
    read every shard and keep every n-th sample instead, so no sample is lost or duplicated.
    Call `set_epoch` between finite passes when workers are used (in-process passes count alone).
    """

    def __init__(self, source: ShardSource, *, shuffle: bool, seed: int, epoch_repeat: bool,
                 ranks: Ranks | None = None) -> None:
        self.source, self.shuffle, self.seed, self.epoch_repeat = source, shuffle, seed, epoch_repeat
        self.buffer_size, self.epoch = SHUFFLE_BUFFER, 0
        self.ranks = ranks  # (rank, world size) when not this process's
        self.positions: Positions | None = None
        self.batches = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, positions: Positions, batches: int = 0) -> None:
        """Start each reader where `positions` (from batches' `position`) left it, mid-epoch,
        `batches` having been drawn before.

        The shards of that epoch are read again up to the position (to rebuild the shuffle
        buffer) but the passed-over samples are not decoded; earlier epochs are not read.
        """
        self.positions, self.batches = dict(positions), batches

    def _raw(self, shards: list[str], split: int, every: int) -> Iterator[tuple[str, dict] | dict]:
        i = 0
        for url in shards:
            try:
                for sample in tar_samples(url):
                    i += 1
                    if (i - 1) % every == split:
                        yield sample
            except Exception as e:  # a bad or vanished shard is skipped, not fatal
                if every == 1 or split == 0:
                    yield skip(url, f"unreadable shard: {type(e).__name__}")

    def __iter__(self) -> Iterator[dict]:
        split, nsplit = reader_split(self.ranks, self.batches)
        self.epoch, offset = resume_start(self.positions, split, nsplit, self.epoch)
        self.positions = None  # a resume applies to the first pass only
        while True:
            shards = list(self.source.shards)
            if self.shuffle:
                random.Random(f"{self.seed}-{self.epoch}").shuffle(shards)  # same order on every reader
            if len(shards) >= nsplit:
                raw = self._raw(shards[split::nsplit], 0, 1)
            else:
                raw = self._raw(shards, split, nsplit)
            rng = random.Random(f"{self.seed}-{self.epoch}-{split}") if self.shuffle else None
            if rng is not None:
                raw = shuffled(raw, self.buffer_size, rng)
            good = count = 0
            for item in raw:
                count += 1
                if count <= offset:
                    continue
                if isinstance(item, dict):
                    sample = item
                else:  # the caption pick has its own seed: passing over samples must not shift the buffer's
                    pick = random.Random(f"{self.seed}-{self.epoch}-{item[0]}") if self.shuffle else None
                    sample = self.source.decode(*item, pick)
                good += "__skip__" not in sample
                sample["__pos__"] = (split, nsplit, self.epoch, count)
                yield sample
            whole_pass, offset = offset == 0, 0
            self.epoch += 1
            if not self.epoch_repeat:
                return
            if good == 0 and whole_pass:
                raise SourceError(f"{self.source.name}: no decodable sample in a whole pass")


