"""Build a real media catalog with ffmpeg: seeded synthetic titles, per-title ladders, segments.

`python -m appliances.media_encode [--out DIR] [--titles N] [--duration-s S] ...` prints the
build folder. Every title is a seeded lavfi source (its own pattern and motion) with a sine
tone: video encoded VP9 into fragmented MP4 at each probe rate (`-deadline realtime -cpu-used
8`, under `nice -n 19`), audio (unless audio_kbps=0) Opus once, as its own track and rung id
`audio_kbps` (dash.js refuses muxed Representations, its error 34); the psnr filter scores each probe against the source and
`media_ladder.select_ladder` keeps the rungs that add quality. Each segment file is
self-initializing: the rung's init (ftyp+moov) followed by one fragment (moof+mdat) whose
decode times continue the title's timeline. Audio segments follow the same layout and end
exactly where the video does: the tone is cut short by Opus's encoder delay (pre-skip), so
tone + pre-skip = duration_s, in 20 ms frames that fill every segment.
Invariants: the build folder is `<out>/<key>` with key = hash of the settings, the format
version and ffmpeg's version line; it is complete (index.json written last, the folder renamed
into place) or absent, so a second build with the same settings re-encodes nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from appliances.media_ladder import (ENOUGH_DB, MIN_GAIN_DB, parse_psnr_db, select_ladder,
                                     split_fragments, vp9_codec_string)

FORMAT_VERSION = 5  # bump when the source graphs or segment layout change
PATTERNS = ("still", "pan", "fractal", "noise")  # roughly simplest to most complex
DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "build" / "media"
INDEX = "index.json"
OPUS_RATE_HZ = 48000
OPUS_PRESKIP_SAMPLES = 312  # libopus's encoder delay at 48 kHz (its OpusHead pre-skip)


@dataclass(frozen=True)
class MediaSettings:
    """Everything that decides the bytes of a build (its cache key hashes these)."""

    seed: int = 1
    n_titles: int = 4
    duration_s: int = 12
    segment_s: int = 2
    width: int = 320
    height: int = 180
    fps: int = 24
    probe_kbps: tuple[int, ...] = (100, 200, 400, 800, 1600)
    patterns: tuple[str, ...] = PATTERNS
    audio_kbps: int = 32  # 0: no audio track
    min_gain_db: float = MIN_GAIN_DB
    enough_db: float = ENOUGH_DB

    def __post_init__(self) -> None:
        object.__setattr__(self, "probe_kbps", tuple(int(k) for k in self.probe_kbps))
        object.__setattr__(self, "patterns", tuple(self.patterns))
        if not 1 <= self.n_titles <= 100:
            raise ValueError(f"n_titles must be in 1..100, got {self.n_titles}")
        if not 1 <= self.segment_s <= 10 or self.duration_s % self.segment_s:
            raise ValueError("segment_s must be in 1..10 and divide duration_s")
        if not self.segment_s <= self.duration_s <= 600:
            raise ValueError("duration_s must be in segment_s..600")
        if list(self.probe_kbps) != sorted(set(self.probe_kbps)) or self.probe_kbps[0] < 16:
            raise ValueError("probe_kbps must be strictly increasing rates >= 16")
        unknown = set(self.patterns) - set(PATTERNS)
        if not 0 <= self.audio_kbps <= 256:
            raise ValueError(f"audio_kbps must be in 0..256 (0: no audio), got {self.audio_kbps}")
        if self.audio_kbps in self.probe_kbps:
            raise ValueError(f"audio_kbps {self.audio_kbps} is also a video probe rate: "
                             "the audio rung id must differ from every video rung")
        if not self.patterns or unknown:
            raise ValueError(f"patterns must be a non-empty subset of {PATTERNS}")
        if self.width % 2 or self.height % 2 or not 16 <= self.width <= 1920:
            raise ValueError("width and height must be even, width in 16..1920")
        vp9_codec_string(self.width, self.height, self.fps)  # raises when too large

    def key(self, ffmpeg_version: str) -> str:
        blob = json.dumps({"settings": dataclasses.asdict(self), "format": FORMAT_VERSION,
                           "ffmpeg": ffmpeg_version}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def n_segments(self) -> int:
        return self.duration_s // self.segment_s


def title_name(i: int) -> str:
    return f"t{i:04d}"


def title_source(s: MediaSettings, i: int) -> dict:
    """The seeded source of title i: pattern, lavfi video graph, tone frequency. Pure."""
    rng = random.Random(f"{s.seed}|media|{i}")
    pattern = s.patterns[i % len(s.patterns)]
    size, rate, d = f"{s.width}x{s.height}", s.fps, s.duration_s
    if pattern == "still":
        video = f"smptehdbars=size={size}:rate={rate}:duration={d}"
    elif pattern == "pan":
        speed = round(rng.uniform(0.002, 0.01), 4)
        video = f"testsrc2=size={size}:rate={rate}:duration={d},scroll=h={speed}"
    elif pattern == "fractal":
        video = (f"mandelbrot=size={size}:rate={rate}:start_scale={rng.uniform(2, 4):.3f}"
                 f":end_scale=0.01:maxiter=96,trim=duration={d}")
    else:
        video = (f"testsrc2=size={size}:rate={rate}:duration={d},"
                 f"noise=alls={rng.randint(30, 60)}:allf=t+u")
    return {"title": title_name(i), "pattern": pattern, "video": video,
            "tone_hz": rng.choice((220, 330, 440, 550, 660))}


def _ffmpeg(args: list[str]) -> subprocess.CompletedProcess:
    cmd = ["nice", "-n", "19", "ffmpeg", "-hide_banner", "-nostdin", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return proc


def ffmpeg_version() -> str:
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is not installed (Debian package ffmpeg; `make setup`)")
    return subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True,
                          check=True).stdout.splitlines()[0]


def render_source(s: MediaSettings, src: dict, out: Path) -> list[str]:
    """Render the title's video once to raw YUV (the lavfi graph can be costly, a Mandelbrot
    zoom above all); returns the ffmpeg input flags that read it back."""
    _ffmpeg(["-f", "lavfi", "-i", src["video"], "-pix_fmt", "yuv420p", "-f", "rawvideo", str(out)])
    return ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{s.width}x{s.height}",
            "-r", str(s.fps), "-i", str(out)]


def encode_probe(s: MediaSettings, src: dict, raw: list[str], kbps: int, out: Path) -> float:
    """Encode one video-only probe of the rendered source `raw` into out (fragmented MP4);
    returns its PSNR in dB."""
    gop = s.fps * s.segment_s
    _ffmpeg([*raw, "-an", "-c:v", "libvpx-vp9", "-b:v", f"{kbps}k", "-maxrate", f"{kbps * 3 // 2}k",
             "-bufsize", f"{kbps * 2}k", "-deadline", "realtime", "-cpu-used", "8",
             "-g", str(gop), "-keyint_min", str(gop), "-threads", "1", "-pix_fmt", "yuv420p",
             "-movflags", "+frag_keyframe+empty_moov+default_base_moof",
             "-f", "mp4", str(out)])
    proc = _ffmpeg(["-i", str(out), *raw, "-lavfi", "[0:v][1:v]psnr", "-f", "null", "-"])
    return parse_psnr_db(proc.stderr)


def encode_audio(s: MediaSettings, src: dict, out: Path) -> list[bytes]:
    """The title's tone as Opus in fragmented MP4, one fragment per segment_s; returns the
    self-initializing segments."""
    samples = s.duration_s * OPUS_RATE_HZ - OPUS_PRESKIP_SAMPLES
    _ffmpeg(["-f", "lavfi", "-i", f"sine=frequency={src['tone_hz']}:sample_rate={OPUS_RATE_HZ}"
             f":duration={s.duration_s}", "-af", f"atrim=end_sample={samples}",
             "-c:a", "libopus", "-b:a", f"{s.audio_kbps}k", "-ac", "1",
             "-frag_duration", str(s.segment_s * 1_000_000),
             "-movflags", "+empty_moov+default_base_moof", "-f", "mp4", str(out)])
    init, frags = split_fragments(out.read_bytes())
    if len(frags) != s.n_segments:
        raise RuntimeError(f"{src['title']} audio: {len(frags)} fragments, expected {s.n_segments}")
    return [init + f for f in frags]


def _write_rung(dest: Path, title: str, rung: int, datas: list[bytes]) -> list[list]:
    """Write one rung's segment files; their [size_bytes, sha256] rows."""
    (dest / title / str(rung)).mkdir(parents=True)
    rows = []
    for index, data in enumerate(datas):
        (dest / title / str(rung) / f"{index}.mp4").write_bytes(data)
        rows.append([len(data), hashlib.sha256(data).hexdigest()])
    return rows


def encode_title(s: MediaSettings, i: int, work: Path, dest: Path) -> dict:
    """Probe, pick the ladder, write the kept rungs' segments under dest/<title>/<kbps>/."""
    src = title_source(s, i)
    t0 = time.monotonic()
    raw = render_source(s, src, work / f"{src['title']}.yuv")
    probes = {}
    for kbps in s.probe_kbps:
        path = work / f"{src['title']}-{kbps}.mp4"
        probes[kbps] = (encode_probe(s, src, raw, kbps, path), path)
    (work / f"{src['title']}.yuv").unlink()
    ladder = select_ladder([(k, q) for k, (q, _) in probes.items()], s.min_gain_db, s.enough_db)
    segments = {}
    for kbps in ladder:
        init, frags = split_fragments(probes[kbps][1].read_bytes())
        if len(frags) != s.n_segments:
            raise RuntimeError(f"{src['title']} {kbps} kbps: {len(frags)} fragments, "
                               f"expected {s.n_segments} (keyframes every segment_s)")
        segments[str(kbps)] = _write_rung(dest, src["title"], kbps, [init + f for f in frags])
    audio = None
    if s.audio_kbps:
        datas = encode_audio(s, src, work / f"{src['title']}-audio.mp4")
        segments[str(s.audio_kbps)] = _write_rung(dest, src["title"], s.audio_kbps, datas)
        audio = {"kbps": s.audio_kbps, "codecs": "opus", "mime": "audio/mp4",
                 "sample_rate_hz": OPUS_RATE_HZ, "channels": 1}
    codecs = vp9_codec_string(s.width, s.height, s.fps)
    return {"audio": audio, "title": src["title"], "pattern": src["pattern"], "tone_hz": src["tone_hz"],
            "probes": [[k, round(q, 3)] for k, (q, _) in probes.items()],
            "ladder_kbps": list(ladder), "codecs": codecs, "segments": segments,
            "encode_s": round(time.monotonic() - t0, 3)}


def build(s: MediaSettings, root: Path = DEFAULT_ROOT) -> Path:
    """The build folder of these settings under root, encoding it only if it is absent."""
    final = Path(root) / s.key(ffmpeg_version())
    if (final / INDEX).is_file():
        return final
    Path(root).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
    try:
        titles = [encode_title(s, i, tmp, tmp) for i in range(s.n_titles)]
        for probe in tmp.glob("*.mp4"):
            probe.unlink()
        index = {"format": FORMAT_VERSION, "settings": dataclasses.asdict(s),
                 "width": s.width, "height": s.height, "fps": s.fps, "mime": "video/mp4",
                 "titles": titles}
        (tmp / INDEX).write_text(json.dumps(index, indent=1, sort_keys=True))
        try:
            os.rename(tmp, final)
        except OSError:  # a concurrent build finished first: keep its folder
            if not (final / INDEX).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def main(argv: list[str] | None = None) -> int:
    d = MediaSettings()
    p = argparse.ArgumentParser(prog="python -m appliances.media_encode", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_ROOT, help="build root (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--titles", type=int, default=d.n_titles)
    p.add_argument("--duration-s", type=int, default=d.duration_s)
    p.add_argument("--segment-s", type=int, default=d.segment_s)
    p.add_argument("--audio-kbps", type=int, default=d.audio_kbps, help="0: video only")
    args = p.parse_args(argv)
    try:
        s = MediaSettings(seed=args.seed, n_titles=args.titles, duration_s=args.duration_s,
                          segment_s=args.segment_s, audio_kbps=args.audio_kbps)
        t0 = time.monotonic()
        path = build(s, args.out)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"media_encode: error: {exc}", file=sys.stderr)
        return 2
    index = json.loads((path / INDEX).read_text())
    for t in index["titles"]:
        print(f"{t['title']} {t['pattern']:8s} ladder {t['ladder_kbps']} "
              f"psnr {[q for _, q in t['probes']]} encode {t['encode_s']} s", file=sys.stderr)
    print(f"built in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
