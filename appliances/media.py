"""A catalog backed by a media build (appliances.media_encode): same contract as content.Catalog.

Invariants:
- Segment path `/v/<title>/<kbps>/<index>` as in appliances.content; a title's video rungs are
  its own ladder (`ladder_of`, what ABR picks from); its audio track, when the build has one, is
  one more rung whose id is the audio kbps (`rungs_of` = ladder + audio; never equal to a video
  rung); (title, kbps, index) outside `rungs_of` is a ContentError;
- `spec` is a CatalogSpec whose ladder is the union of the titles' ladders, so code that only
  needs titles, durations and popularity works unchanged;
- sizes and SHA-256 come from the build's index.json; `segment_bytes` reads the file and
  raises ContentError if it no longer matches the recorded size (a damaged build).
`catalog_from_args(args)` picks this catalog when `--media-dir` is given, else the synthetic one.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from appliances.content import Catalog, CatalogSpec, ContentError
from appliances.media_encode import INDEX


class MediaCatalog(Catalog):
    """The synthetic Catalog's interface over the files of one media build."""

    def __init__(self, build_dir: str | Path, zipf_alpha: float = CatalogSpec().zipf_alpha) -> None:
        self.build_dir = Path(build_dir)
        try:
            index = json.loads((self.build_dir / INDEX).read_text())
        except FileNotFoundError:
            raise ValueError(f"{self.build_dir}: not a media build (no {INDEX})") from None
        settings = index["settings"]
        self.index = index
        self.titles_info = {t["title"]: t for t in index["titles"]}
        self._ladders = {t: tuple(info["ladder_kbps"]) for t, info in self.titles_info.items()}
        self._rungs = {t: ladder + ((self.titles_info[t]["audio"]["kbps"],)
                                    if self.titles_info[t].get("audio") else ())
                       for t, ladder in self._ladders.items()}
        union = sorted({k for ladder in self._ladders.values() for k in ladder})
        super().__init__(CatalogSpec(seed=settings["seed"], n_titles=len(self.titles_info),
                                     duration_s=settings["duration_s"], ladder_kbps=tuple(union),
                                     segment_s=settings["segment_s"], zipf_alpha=zipf_alpha))

    def ladder_of(self, title: str) -> tuple[int, ...]:
        self._check_title(title)
        return self._ladders[title]

    def rungs_of(self, title: str) -> tuple[int, ...]:
        self._check_title(title)
        return self._rungs[title]

    def _has_rung(self, title: str, kbps: int) -> bool:
        return kbps in self._rungs[title]

    def segment_size(self, title: str, kbps: int, index: int) -> int:
        self.check_segment(title, kbps, index)
        return self.titles_info[title]["segments"][str(kbps)][index][0]

    def segment_sha256(self, title: str, kbps: int, index: int) -> str:
        self.check_segment(title, kbps, index)
        return self.titles_info[title]["segments"][str(kbps)][index][1]

    def segment_bytes(self, title: str, kbps: int, index: int) -> bytes:
        size = self.segment_size(title, kbps, index)
        data = (self.build_dir / title / str(kbps) / f"{index}.mp4").read_bytes()
        if len(data) != size:
            raise ContentError(f"{title}/{kbps}/{index}: file has {len(data)} bytes, index {size}")
        return data

    def title_bytes(self, title: str, n_segments: int) -> int:
        return sum(self.segment_size(title, k, i) for k in self.rungs_of(title)
                   for i in range(n_segments))

    def media_info(self, title: str) -> dict:
        """What a manifest needs besides sizes: video codecs, resolution, frame rate, mime
        type, and "audio" ({kbps, codecs, mime, sample_rate_hz, channels}, or None)."""
        self._check_title(title)
        return {"codecs": self.titles_info[title]["codecs"], "width": self.index["width"],
                "height": self.index["height"], "fps": self.index["fps"],
                "mime": self.index["mime"], "audio": self.titles_info[title].get("audio")}

    def __hash__(self) -> int:
        return hash((self.spec, str(self.build_dir)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MediaCatalog) and other.build_dir == self.build_dir


def add_media_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--media-dir", default=None, metavar="DIR",
                        help="serve the real media of this build (appliances.media_encode) "
                             "instead of the synthetic catalog")


def catalog_from_args(args: argparse.Namespace) -> Catalog:
    if getattr(args, "media_dir", None):
        return MediaCatalog(args.media_dir, zipf_alpha=args.zipf_alpha)
    return Catalog(CatalogSpec.from_cli_args(args))
