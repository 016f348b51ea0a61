"""Real test media made with the real ffmpeg (lavfi sources, a few small frames).

Every function writes one file at ``path`` (the name, extension included, is the caller's)
and returns the path, or a small record when the test needs to know what is inside. Each
takes well under a second on two cores. Damaged files are made by cutting or patching real
ones, so they fail the way files in the wild do.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.shared.ffbin import find_tools

# Frames of the VFR clip: presentation times (s, irregular) and the grey level of each frame.
VFR_PTS: tuple[float, ...] = (0.0, 0.1, 0.15, 0.5, 0.55, 0.6, 1.2, 1.25, 1.9, 2.0)
VFR_LEVELS: tuple[int, ...] = tuple(30 + 20 * i for i in range(len(VFR_PTS)))
VFR_END_S = 2.1  # the last frame (at 2.0) lasts one 10 fps period


@dataclass(frozen=True)
class VfrClip:
    """A VFR clip whose frame ``i`` starts at ``pts[i]`` and is a flat grey ``levels[i]``."""

    path: Path
    pts: tuple[float, ...]
    levels: tuple[int, ...]

    def level_at(self, t: float) -> int:
        """Grey level on screen at time ``t`` (the last frame whose pts <= t)."""
        idx = max(i for i, p in enumerate(self.pts) if p <= t + 1e-9)
        return self.levels[idx]


def ffmpeg(*args: str) -> None:
    """Run the project's ffmpeg with ``args``; raise with its stderr on failure."""
    cmd = [find_tools().ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({out.returncode}): {cmd}\n{out.stderr[-2000:]}")


def _cut(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def good_video(path: Path, seconds: float = 3, size: tuple[int, int] = (160, 120),
               fps: int = 20, audio: bool = True, codec: str = "libx264",
               extra: Sequence[str] = ()) -> Path:
    """A testsrc2 clip (plus a sine tone when ``audio``) encoded with ``codec``."""
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size[0]}x{size[1]}:rate={fps}"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000"]
    args += ["-t", str(seconds), "-c:v", codec]
    if codec == "libx264":
        args += ["-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac" if path.suffix in (".mp4", ".mov", ".m4v") else "libopus"]
    ffmpeg(*args, *extra, str(path))
    return path


def truncated_moov_at_end(path: Path) -> Path:
    """A normal (index at the end) mp4 cut in half: the moov atom is gone."""
    good_video(path, seconds=2, audio=False)
    _cut(path, 0.5)
    return path


def cut_faststart(path: Path, keep: float = 0.5, seconds: float = 3) -> Path:
    """A faststart mp4 (index first) cut to ``keep`` of its bytes: it decodes part, exit 0."""
    good_video(path, seconds=seconds, audio=False, extra=["-movflags", "+faststart"])
    _cut(path, keep)
    return path


def audio_only(path: Path) -> Path:
    """An AAC tone in an mp4 container: no video stream."""
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "1",
           "-c:a", "aac", "-f", "mp4", str(path))
    return path


def audio_with_cover(path: Path) -> Path:
    """An AAC tone plus a JPEG cover (an ``attached_pic`` video stream): still no video."""
    cover = path.with_name(path.stem + ".cover.jpg")
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x64", "-frames:v", "1", "-c:v", "mjpeg",
           "-f", "image2", "-update", "1", str(cover))
    ffmpeg("-f", "lavfi", "-t", "1", "-i", "sine=frequency=440:sample_rate=16000",
           "-i", str(cover), "-map", "0:a", "-map", "1:v", "-c:a", "aac", "-c:v", "copy",
           "-disposition:v:0", "attached_pic", "-f", "mp4", str(path))
    cover.unlink()
    return path


def image_as_mp4(path: Path) -> Path:
    """A real PNG image under a video name (written with zlib: this ffmpeg has no PNG codec)."""
    width, height = 64, 48
    raw = b"".join(b"\x00" + b"".join(bytes((x * 4 % 256, y * 5 % 256, 128))
                                        for x in range(width)) for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def ppm_as_mp4(path: Path) -> Path:
    """A binary PPM image (no magic the sniffer knows): ffprobe must name it an image."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1", "-c:v", "ppm",
           "-f", "image2pipe", str(path))
    return path


def text_as_mp4(path: Path) -> Path:
    """A plain text file under a video name."""
    path.write_text("This is not a video.\nJust two lines of notes.\n", encoding="utf-8")
    return path


def hls_as_mp4(path: Path, target: str = "/etc/passwd") -> Path:
    """An HLS playlist whose only segment is a local file outside the input folder."""
    path.write_text("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n"
                    f"#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\nfile://{target}\n"
                    "#EXT-X-ENDLIST\n", encoding="utf-8")
    return path


def ffconcat_as_mp4(path: Path, target: str = "/etc/passwd") -> Path:
    """An ffconcat script (the 2017 exploit shape) pointing at ``target``."""
    path.write_text(f"ffconcat version 1.0\nfile '{target}'\n", encoding="utf-8")
    return path


def dash_as_mp4(path: Path) -> Path:
    """A DASH MPD manifest under a video name."""
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
        'mediaPresentationDuration="PT10S" minBufferTime="PT2S" '
        'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">\n'
        ' <Period><AdaptationSet mimeType="video/mp4"><Representation id="1" '
        'bandwidth="1000"><BaseURL>file:///etc/passwd</BaseURL></Representation>'
        '</AdaptationSet></Period>\n</MPD>\n', encoding="utf-8")
    return path


# Other indirections, as bytes, for the sniffer: name -> content.
UNSAFE_TEXTS: dict[str, bytes] = {
    "sdp": b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nc=IN IP4 127.0.0.1\r\n"
           b"t=0 0\r\nm=video 5004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
    "pls": b"[playlist]\nFile1=/home/user/video.mp4\nTitle1=x\nNumberOfEntries=1\nVersion=2\n",
    "asx": b'<asx version="3.0"><entry><ref href="file:///etc/passwd"/></entry></asx>\n',
    "xspf": b'<?xml version="1.0"?>\n<playlist version="1" xmlns="http://xspf.org/ns/0/">'
            b"<trackList><track><location>/etc/passwd</location></track></trackList>"
            b"</playlist>\n",
    "m3u_paths": b"/home/user/a.mp4\n../secret/b.mkv\n",
    "m3u_urls": b"http://example.com/a.mp4\nhttps://example.com/b.mp4\n",
    "url_text": b"see rtmp://example.com/live/stream for the feed\n",
    "concat_proto": b"concat:/etc/passwd|/etc/hosts\n",
    "hls_bom": b"\xef\xbb\xbf#EXTM3U\n#EXTINF:1,\nseg.ts\n",
}


def huge_resolution(path: Path, size: tuple[int, int] = (8200, 4400)) -> Path:
    """Two solid-colour frames above the default pixel limit (8192*4320), cheap to make."""
    ffmpeg("-f", "lavfi", "-i", f"color=c=green:s={size[0]}x{size[1]}:r=2", "-frames:v", "2",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path))
    return path


def false_duration(path: Path, claimed_s: float = 40_000.0, seconds: float = 2) -> Path:
    """A 2 s mkv whose Segment Info Duration claims ``claimed_s`` seconds.

    (An mp4 is no good here: ffmpeg's mov demuxer recomputes the duration from the sample
    tables and ignores patched mvhd/mdhd values.)
    """
    good_video(path, seconds=seconds, audio=False)
    data = path.read_bytes()
    at = data.find(b"\x44\x89\x88")  # Duration element, 8-byte float, in TimestampScale (ms)
    if at < 0:
        raise RuntimeError(f"no 8-byte Duration element in {path}")
    at += 3
    path.write_bytes(data[:at] + struct.pack(">d", claimed_s * 1000.0) + data[at + 8:])
    return path


def vfr_video(path: Path, codec: str = "ffv1") -> VfrClip:
    """A VFR mkv: frame ``i`` is shown from ``VFR_PTS[i]`` and is a flat grey ``VFR_LEVELS[i]``.

    Written losslessly with ``-fps_mode passthrough`` so the irregular timestamps stay:
    ``ffv1`` (every frame a keyframe) or ``libx264`` (lossless, a single keyframe: seeks
    must decode from the keyframe before the target).
    """
    pts_expr = "0"
    for i, t in reversed(list(enumerate(VFR_PTS))):
        pts_expr = f"if(eq(N\\,{i})\\,{t}\\,{pts_expr})"
    lum = "+".join(f"{lvl - (VFR_LEVELS[i - 1] if i else 0)}*gte(N\\,{i})"
                   for i, lvl in enumerate(VFR_LEVELS))
    graph = (f"color=c=black:s=64x48:r=10,format=yuv420p,settb=1/1000,"
             f"setpts='round({pts_expr}/TB)',geq=lum='{lum}':cb=128:cr=128")
    enc = ["-qp", "0", "-g", "250", "-preset", "ultrafast"] if codec == "libx264" else []
    ffmpeg("-f", "lavfi", "-i", graph, "-frames:v", str(len(VFR_PTS)), "-fps_mode",
           "passthrough", "-enc_time_base", "1/1000", "-c:v", codec, *enc, str(path))
    return VfrClip(path, VFR_PTS, VFR_LEVELS)


def rotated_video(path: Path, degrees: int = 90) -> Path:
    """160x120 coded frames, top half red and bottom half blue, with display rotation.

    ``degrees`` is clockwise (the legacy ``rotate`` tag convention): with 90 the upright
    picture is 120x160 with red on the right and blue on the left.
    """
    tmp = path.with_name(path.stem + ".unrotated" + path.suffix)
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=160x60:r=10,pad=160:120:0:0:blue", "-t", "1",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(tmp))
    ffmpeg("-display_rotation", str(-degrees), "-i", str(tmp), "-c", "copy", str(path))
    tmp.unlink()
    return path


def ten_bit_video(path: Path, codec: str = "libx264") -> Path:
    """A 10-bit 4:2:0 testsrc2 clip (High 10 H.264 by default)."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-t", "1", "-c:v", codec,
           "-preset", "ultrafast", "-pix_fmt", "yuv420p10le", str(path))
    return path


def _patch_bytes(path: Path, old: bytes, new: bytes) -> None:
    assert len(old) == len(new), "in-place patches must keep the length"
    data = path.read_bytes()
    if old not in data:
        raise RuntimeError(f"{old!r} not found in {path}")
    path.write_bytes(data.replace(old, new, 1))


def unsupported_codec(path: Path) -> Path:
    """An H.264 mkv whose CodecID is patched to an unknown same-length ID."""
    good_video(path, seconds=1, audio=False)
    _patch_bytes(path, b"V_MPEG4/ISO/AVC", b"V_VIDEOBERT/XYZ")
    return path


def av1_video(path: Path) -> Path:
    """A real AV1 clip (SVT-AV1): decodable only where a software AV1 decoder is built in."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-t", "0.5",
           "-c:v", "libsvtav1", "-preset", "12", "-svtav1-params", "log-level=0", str(path))
    return path


def _srt(cues: Sequence[tuple[float, float, str]]) -> str:
    def ts(t: float) -> str:
        ms = round(t * 1000)
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"
    return "".join(f"{i}\n{ts(a)} --> {ts(b)}\n{text}\n\n"
                   for i, (a, b, text) in enumerate(cues, 1))


def with_embedded_subs(path: Path, cues: Sequence[tuple[float, float, str]],
                       bitmap: bool = False, language: str = "eng") -> Path:
    """A 3 s clip with a text subtitle stream built from ``cues`` (start_s, end_s, text).

    ``.mkv`` gets SubRip, ``.mp4``/``.mov`` get mov_text. With ``bitmap`` (mkv only) a second
    subtitle stream is added and its CodecID patched to HDMV PGS, a bitmap format.
    """
    srt = path.with_name(path.stem + ".cues.srt")
    srt.write_text(_srt(cues), encoding="utf-8")
    video = path.with_name(path.stem + ".video" + path.suffix)
    good_video(video, seconds=3, audio=False)
    mp4 = path.suffix in (".mp4", ".mov", ".m4v")
    args = ["-i", str(video), "-i", str(srt)]
    maps = ["-map", "0:v", "-map", "1:s"]
    codecs = ["-c:v", "copy", "-c:s:0", "mov_text" if mp4 else "srt"]
    if bitmap:
        maps += ["-map", "1:s"]
        codecs += ["-c:s:1", "ass"]
    ffmpeg(*args, *maps, *codecs, "-metadata:s:s:0", f"language={language}",
           "-metadata:s:s:0", "title=Dialogue", str(path))
    srt.unlink()
    video.unlink()
    if bitmap:
        _patch_bytes(path, b"S_TEXT/ASS", b"S_HDMV/PGS")
    return path


def weird_names() -> list[str]:
    """File names that break naive shell or argument handling."""
    return [
        "with space.mp4",
        "ünïcödé 视频 🎬.mp4",
        "semi;pipe|dollar$(rm -rf x)`tick`.mp4",
        "-leading-dash.mp4",
        "new\nline.mp4",
        "colon:file:odd?#.mp4",
    ]


def copy_as(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` (for the same content under other names)."""
    shutil.copyfile(src, dst)
    return dst


# ----------------------------------------------------------------------------- speech
JFK_OPUS = Path(__file__).parent / "data" / "jfk.opus"  # provenance: tests/data/README.md
JFK_TEXT = ("And so, my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.")
JFK_SECONDS = 11.0


def _grey(size: tuple[int, int]) -> list[str]:
    return ["-f", "lavfi", "-i", f"color=c=gray:s={size[0]}x{size[1]}:r=10"]


def talking_video(path: Path, lead_s: float = 0.0, size: tuple[int, int] = (64, 48)) -> Path:
    """A grey clip whose sound track is real speech (:data:`JFK_TEXT`) after ``lead_s`` of
    silence; H.264 + AAC in mp4, Opus in mkv."""
    total = JFK_SECONDS + lead_s + 0.5
    delay = int(round(lead_s * 1000))
    ffmpeg(*_grey(size), "-i", str(JFK_OPUS), "-filter:a", f"adelay={delay}:all=1,apad",
           "-t", f"{total:.2f}", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt",
           "yuv420p", "-c:a", "aac" if path.suffix == ".mp4" else "libopus", str(path))
    return path


def music_video(path: Path, seconds: float = 6.0) -> Path:
    """A grey clip over a synthetic chord progression (C, F, G, C; no voice)."""
    root = ("if(lt(mod(t,6),1.5),261.6,if(lt(mod(t,6),3),349.2,if(lt(mod(t,6),4.5),392,"
            "261.6)))")
    chord = "+".join(f"0.15*sin(2*PI*{k}*({root})*t)" for k in (1, 1.26, 1.5, 2))
    ffmpeg(*_grey((64, 48)), "-f", "lavfi", "-i", f"aevalsrc='{chord}':s=16000:d={seconds}",
           "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt",
           "yuv420p", "-c:a", "aac", str(path))
    return path


def silent_video(path: Path, seconds: float = 4.0) -> Path:
    """A grey clip with a sound track of digital silence."""
    ffmpeg(*_grey((64, 48)), "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
           "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt",
           "yuv420p", "-c:a", "aac", str(path))
    return path


def corrupt_audio_video(path: Path) -> Path:
    """An mkv with a good H.264 stream whose Opus track is declared AC-3: every audio packet
    fails to decode (the video decodes fine)."""
    assert path.suffix == ".mkv", "the patch needs Matroska's codec ID"
    talking_video(path)
    _patch_bytes(path, b"A_OPUS", b"A_AC3\x00")
    return path


def unknown_audio_codec_video(path: Path) -> Path:
    """An mkv with a good H.264 stream and an audio track of an unknown codec ID."""
    assert path.suffix == ".mkv", "the patch needs Matroska's codec ID"
    talking_video(path)
    _patch_bytes(path, b"A_OPUS", b"A_XYZW")
    return path
